"""Training text: users' data files or a generated domain corpus, packed into token rows."""

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from observe.errors import ObserveError
from observe.workload.corpus import DOMAINS, generate_corpus, generate_prompts
from observe.workload.tokenizer import ByteTokenizer

_JSONL_SHAPE = 'each line must be a JSON object like {"text": "..."}'


def load_texts(path: str | os.PathLike[str]) -> list[str]:
    """Read documents from a ``.txt`` (one per line) or ``.jsonl`` (``{"text": ...}``) file.

    Blank lines are skipped in both formats.
    """
    file = Path(path)
    if not file.exists():
        raise ObserveError(f"data file {file} does not exist: check the path passed to --data")
    if file.is_dir():
        raise ObserveError(f"data file {file} is a directory: pass a .txt or .jsonl file")
    suffix = file.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise ObserveError(
            f"data file {file} has unsupported suffix {suffix or '(none)'!r}: use .txt (one "
            'document per line) or .jsonl (one {"text": "..."} object per line)'
        )
    raw = file.read_bytes()
    try:
        # A leading byte-order mark is how some editors save UTF-8; it is not part of the text.
        content = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ObserveError(
            f"data file {file} is not UTF-8 (bad byte at offset {exc.start}, line {line}): "
            "re-save it as UTF-8"
        ) from None
    # split("\n") rather than splitlines(): the latter also splits on characters such as
    # U+2028 that may legitimately sit inside a document. A trailing "\r" is stripped below
    # (.txt) or is JSON whitespace (.jsonl).
    lines = content.split("\n")
    if suffix == ".txt":
        texts = [line.strip() for line in lines if line.strip()]
        shape = "put one document per line"
    else:
        texts = [_jsonl_text(file, n, line) for n, line in enumerate(lines, 1) if line.strip()]
        shape = _JSONL_SHAPE
    if not texts:
        raise ObserveError(f"data file {file} contains no documents: {shape}")
    return texts


def _jsonl_text(file: Path, line_no: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ObserveError(
            f"data file {file} line {line_no} is not valid JSON ({exc.msg}): {_JSONL_SHAPE}"
        ) from None
    if not isinstance(record, dict) or "text" not in record:
        raise ObserveError(f"data file {file} line {line_no} has no 'text' field: {_JSONL_SHAPE}")
    text = record["text"]
    if not isinstance(text, str):
        raise ObserveError(
            f"data file {file} line {line_no} has a 'text' field of type "
            f"{type(text).__name__}, not a string: {_JSONL_SHAPE}"
        )
    return text


def pack_documents(texts: Sequence[str], tokenizer: ByteTokenizer, seq_len: int) -> torch.Tensor:
    """Concatenate BOS + bytes + EOS per document and cut into (N, seq_len + 1) rows.

    Each row holds inputs ``row[:-1]`` and next-token labels ``row[1:]``; the tail that does not
    fill a whole row is dropped.
    """
    if seq_len < 1:
        raise ObserveError(f"seq_len is {seq_len}: pass a sequence length of 1 or more")
    tokens: list[int] = []
    for text in texts:
        tokens += tokenizer.encode(text, bos=True, eos=True)
    width = seq_len + 1
    n_rows = len(tokens) // width
    if n_rows == 0:
        raise ObserveError(
            f"the training text is {len(tokens)} tokens but one row needs {width} "
            f"(seq_len {seq_len} + 1): add more documents or use a smaller seq_len"
        )
    return torch.tensor(tokens[: n_rows * width], dtype=torch.long).view(n_rows, width)


class BatchSampler:
    """Endless seeded batches of packed rows, shuffled epoch by epoch without replacement."""

    def __init__(self, rows: torch.Tensor, batch_size: int, *, seed: int = 0) -> None:
        if rows.dim() != 2 or rows.shape[0] == 0 or rows.shape[1] < 2:
            raise ObserveError(
                f"packed rows have shape {tuple(rows.shape)}: expected (N >= 1, seq_len + 1 >= 2)"
                " as returned by pack_documents"
            )
        if batch_size < 1:
            raise ObserveError(f"batch_size is {batch_size}: pass a batch size of 1 or more")
        self.rows = rows
        self.batch_size = batch_size
        self._generator = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (input_ids, labels), each (batch_size, seq_len) long."""
        picked: list[torch.Tensor] = []
        needed = self.batch_size
        # A batch may straddle an epoch boundary (or several, when batch_size > N rows).
        while needed:
            if self._cursor == len(self._order):
                self._order = torch.randperm(len(self.rows), generator=self._generator)
                self._cursor = 0
            take = self._order[self._cursor : self._cursor + needed]
            picked.append(take)
            self._cursor += len(take)
            needed -= len(take)
        batch = self.rows[torch.cat(picked)]
        return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


def domain_texts(domain: str | None, data_file: str | None, n_docs: int, seed: int) -> list[str]:
    """Texts from exactly one source; ``n_docs`` and ``seed`` apply to the generated corpus."""
    if domain is not None and data_file is not None:
        raise ObserveError(
            "both a domain and a data file were given: pass one of --domain or --data"
        )
    if data_file is not None:
        return load_texts(data_file)
    if domain is None:
        raise ObserveError(
            f"no training text was given: pass --domain (one of {', '.join(DOMAINS)}) "
            "or --data (a .txt or .jsonl file)"
        )
    return generate_corpus(domain, n_docs, seed=seed)


def reference_prompts(domain: str | None, data_file: str | None, n: int, seed: int) -> list[str]:
    """`n` prompts like the ones the model will serve, from its training source: fresh
    prompts of a built-in domain, or the first 4-10 words of documents of a data file."""
    if data_file is None:
        if domain is None:
            raise ObserveError("reference prompts need a domain or a data file")
        return generate_prompts(domain, n, seed=seed)
    texts = load_texts(data_file)
    rng = random.Random(seed)
    return [" ".join(rng.choice(texts).split()[: rng.randint(4, 10)]) for _ in range(n)]
