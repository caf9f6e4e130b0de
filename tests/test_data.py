import json
from pathlib import Path

import pytest
import torch

from observe.errors import ObserveError
from observe.workload.corpus import generate_corpus
from observe.workload.data import BatchSampler, domain_texts, load_texts, pack_documents
from observe.workload.tokenizer import ByteTokenizer

tok = ByteTokenizer()


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_load_txt_one_document_per_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "docs.txt", "first doc\n\n  \nsecond — café\r\nthird\n")
    assert load_texts(path) == ["first doc", "second — café", "third"]
    assert load_texts(str(path)) == load_texts(path)


def test_load_jsonl_text_field(tmp_path: Path) -> None:
    lines = [json.dumps({"text": "alpha", "id": 1}), "", json.dumps({"text": "β line\nbreak"})]
    path = _write(tmp_path / "docs.JSONL", "\ufeff" + "\n".join(lines) + "\n")
    assert load_texts(path) == ["alpha", "β line\nbreak"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ObserveError, match="does not exist"):
        load_texts(tmp_path / "nope.txt")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "data.txt"
    folder.mkdir()
    with pytest.raises(ObserveError, match="is a directory"):
        load_texts(folder)


@pytest.mark.parametrize("name", ["docs.csv", "docs"])
def test_unsupported_suffix_names_both_formats(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, "a\n")
    with pytest.raises(ObserveError, match=r"unsupported suffix.*\.txt.*\.jsonl"):
        load_texts(path)


def test_not_utf8_names_offset_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "latin1.txt", "ok line\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ObserveError, match=r"not UTF-8.*offset 11, line 2.*re-save it as UTF-8"):
        load_texts(path)


def test_invalid_json_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", '{"text": "ok"}\n\n{"text": oops}\n')
    with pytest.raises(ObserveError, match=r"line 3 is not valid JSON"):
        load_texts(path)


@pytest.mark.parametrize("record", ['{"body": "x"}', '["text"]', '"text"'])
def test_missing_text_field_names_line(tmp_path: Path, record: str) -> None:
    path = _write(tmp_path / "bad.jsonl", '{"text": "ok"}\n' + record + "\n")
    with pytest.raises(ObserveError, match=r"line 2 has no 'text' field.*\{\"text\": \"\.\.\.\"\}"):
        load_texts(path)


def test_non_string_text_names_line_and_type(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", '{"text": 42}\n')
    with pytest.raises(ObserveError, match=r"line 1 has a 'text' field of type int, not a string"):
        load_texts(path)


@pytest.mark.parametrize("name", ["empty.txt", "empty.jsonl"])
@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(ObserveError, match="contains no documents"):
        load_texts(path)


def test_pack_documents_shape_and_contents() -> None:
    texts = ["hello world", "second document here", "x" * 40]
    rows = pack_documents(texts, tok, seq_len=15)
    stream = [t for text in texts for t in tok.encode(text, bos=True, eos=True)]
    assert rows.dtype == torch.long
    assert rows.shape == (len(stream) // 16, 16)
    assert rows[0, 0].item() == tok.BOS_ID
    assert rows.flatten().tolist() == stream[: rows.numel()]
    assert tok.EOS_ID in rows[0].tolist()


def test_pack_documents_too_short_says_counts() -> None:
    with pytest.raises(ObserveError, match=r"is 7 tokens but one row needs 65.*smaller seq_len"):
        pack_documents(["hello"], tok, seq_len=64)
    with pytest.raises(ObserveError, match="seq_len is 0"):
        pack_documents(["hello"], tok, seq_len=0)


def _rows() -> torch.Tensor:
    return pack_documents(generate_corpus("finance", 40), tok, seq_len=32)


def test_batch_sampler_shapes_and_shift() -> None:
    rows = _rows()
    inputs, labels = BatchSampler(rows, 4, seed=0).next_batch()
    assert inputs.shape == labels.shape == (4, 32)
    assert inputs.dtype == labels.dtype == torch.long
    assert torch.equal(inputs[:, 1:], labels[:, :-1])
    full = torch.cat([inputs, labels[:, -1:]], dim=1)
    assert all(any(torch.equal(r, row) for row in rows) for r in full)


def test_batch_sampler_is_deterministic_per_seed() -> None:
    rows = _rows()

    def draws(seed: int) -> list[torch.Tensor]:
        sampler = BatchSampler(rows, 3, seed=seed)
        return [sampler.next_batch()[0] for _ in range(10)]

    assert all(torch.equal(a, b) for a, b in zip(draws(7), draws(7), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(draws(7), draws(8), strict=True))


def test_batch_sampler_covers_each_row_once_per_epoch() -> None:
    rows = torch.arange(10 * 5).view(10, 5)
    sampler = BatchSampler(rows, 5, seed=1)
    firsts = [sampler.next_batch()[0][:, 0] for _ in range(4)]
    epoch1, epoch2 = torch.cat(firsts[:2]), torch.cat(firsts[2:])
    assert sorted(epoch1.tolist()) == sorted(epoch2.tolist()) == list(range(0, 50, 5))
    assert not torch.equal(epoch1, epoch2)


def test_batch_sampler_batch_larger_than_rows() -> None:
    rows = torch.arange(3 * 4).view(3, 4)
    inputs, _ = BatchSampler(rows, 7, seed=0).next_batch()
    assert inputs.shape == (7, 3)


def test_batch_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ObserveError, match="batch_size is 0"):
        BatchSampler(_rows(), 0)
    with pytest.raises(ObserveError, match="pack_documents"):
        BatchSampler(torch.zeros(0, 8, dtype=torch.long), 2)


def test_domain_texts_sources(tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.txt", "my own doc\n")
    assert domain_texts(None, str(path), n_docs=5, seed=0) == ["my own doc"]
    assert domain_texts("legal", None, n_docs=5, seed=2) == generate_corpus("legal", 5, seed=2)
    with pytest.raises(ObserveError, match="pass one of --domain or --data"):
        domain_texts("legal", str(path), n_docs=5, seed=0)
    with pytest.raises(ObserveError, match=r"--domain.*--data"):
        domain_texts(None, None, n_docs=5, seed=0)
