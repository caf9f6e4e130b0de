"""Byte-level UTF-8 tokenizer: every string is encodable and nothing has to be downloaded."""

from collections.abc import Sequence

import torch


class ByteTokenizer:
    """Ids 0-255 are raw UTF-8 bytes; three special ids follow them."""

    PAD_ID = 256
    BOS_ID = 257
    EOS_ID = 258
    VOCAB_SIZE = 259

    def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        if bos:
            ids.insert(0, self.BOS_ID)
        if eos:
            ids.append(self.EOS_ID)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        # A generated sequence can stop mid-character, so broken bytes become U+FFFD, not errors.
        data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
        return data.decode("utf-8", errors="replace")

    def encode_batch(
        self, texts: Sequence[str], *, bos: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return left-padded (input_ids, attention_mask), each (B, S) long.

        Padding goes on the left so every row's last token sits in the final column,
        which is where batched generation appends the next token.
        """
        encoded = [self.encode(text, bos=bos) for text in texts]
        width = max((len(ids) for ids in encoded), default=0)
        input_ids = torch.full((len(encoded), width), self.PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            if ids:
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids) :] = 1
        return input_ids, attention_mask
