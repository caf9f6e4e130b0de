import torch

from observe.workload.tokenizer import ByteTokenizer

tok = ByteTokenizer()


def test_special_ids_follow_the_bytes() -> None:
    assert (tok.PAD_ID, tok.BOS_ID, tok.EOS_ID, tok.VOCAB_SIZE) == (256, 257, 258, 259)


def test_round_trip_including_non_ascii() -> None:
    text = "Dosage: 250 µg — naïve café 日本語 🙂"
    ids = tok.encode(text)
    assert ids[0] == tok.BOS_ID
    assert len(ids) == 1 + len(text.encode("utf-8"))
    assert all(0 <= i < tok.VOCAB_SIZE for i in ids)
    assert tok.decode(ids) == text


def test_bos_and_eos_flags() -> None:
    assert tok.encode("ab", bos=False) == [97, 98]
    assert tok.encode("ab", bos=True, eos=True) == [tok.BOS_ID, 97, 98, tok.EOS_ID]


def test_decode_skips_specials_and_replaces_broken_bytes() -> None:
    ids = [tok.PAD_ID, tok.BOS_ID, *"hé".encode(), tok.EOS_ID, tok.PAD_ID]
    assert tok.decode(ids) == "hé"
    # A generation cut in the middle of a multi-byte character must not raise.
    assert tok.decode(list("é".encode())[:1]) == "\ufffd"


def test_encode_batch_pads_on_the_left() -> None:
    input_ids, mask = tok.encode_batch(["hello", "hi", ""])
    assert input_ids.shape == mask.shape == (3, 6)
    assert input_ids.dtype == mask.dtype == torch.long
    assert input_ids[0].tolist() == tok.encode("hello")
    assert input_ids[1].tolist() == [tok.PAD_ID] * 3 + tok.encode("hi")
    assert input_ids[2].tolist() == [tok.PAD_ID] * 5 + [tok.BOS_ID]
    assert mask.tolist() == [[1] * 6, [0, 0, 0, 1, 1, 1], [0] * 5 + [1]]
    # Every row's last real token sits in the final column, ready for generation.
    assert (mask[:, -1] == 1).all()


def test_encode_batch_without_bos() -> None:
    input_ids, mask = tok.encode_batch(["ab", "c"], bos=False)
    assert input_ids.tolist() == [[97, 98], [tok.PAD_ID, 99]]
    assert mask.tolist() == [[1, 1], [0, 1]]
