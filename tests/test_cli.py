"""The `observe` commands end to end on the tiny model, and their errors on bad input."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from observe.cli import app

runner = CliRunner()
TINY = [
    "--config",
    "tiny",
    "--steps",
    "3",
    "--batch-size",
    "2",
    "--seq-len",
    "32",
    "--docs",
    "40",
    "--no-progress",
]


def invoke(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    code, output = invoke("train", "--domain", "medical", "--out", out, *TINY)
    assert code == 0, output
    assert "trained to step 3 on medical" in output
    return out


def test_train_on_a_users_jsonl_file(tmp_path: Path) -> None:
    data = tmp_path / "notes.jsonl"
    data.write_text("\n".join(f'{{"text": "note {i} about the weather"}}' for i in range(60)))
    code, output = invoke("train", "--data", data, "--out", tmp_path / "run", *TINY)
    assert code == 0, output
    assert "on notes.jsonl" in output
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_infer_replays_traffic_and_reports(checkpoint: Path) -> None:
    code, output = invoke(
        "infer",
        "--checkpoint",
        checkpoint,
        "--traffic",
        "medical;finance",
        "--requests",
        "16",
        "--repeat-share",
        "0.5",
        "--max-new-tokens",
        "4",
    )
    assert code == 0, output
    for figure in ("requests/s", "p50", "p95", "p99", "miss rate"):
        assert figure in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--out", "x", *TINY], "pass --domain NAME or --data FILE"),
        (["train", "--domain", "astrology", "--out", "x", *TINY], "medical"),
        (["train", "--domain", "legal", "--config", "huge", "--out", "x"], "tiny, small, bench"),
        (["train", "--data", "/no/such/file.txt", "--out", "x", *TINY], "/no/such/file.txt"),
        (["train", "--domain", "legal", "--data", "a.txt", "--out", "x", *TINY], "one of"),
        (["train", "--domain", "legal", "--steps", "0", "--out", "x"], "steps=0"),
        (["train", "--domain", "legal", "--freeze-below", "5", "--out", "x", *TINY], "2 layers"),
        (["infer", "--checkpoint", "/no/such/run"], "no checkpoint at"),
    ],
)
def test_bad_input_is_a_clear_error(args: list[str], message: str, tmp_path: Path) -> None:
    code, output = invoke(*[str(tmp_path / a) if a == "x" else a for a in args])
    assert code == 2, output
    assert "error:" in output and message in output
    assert "Traceback" not in output


def test_bad_data_file_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine"}\n{"body": "no text here"}\n')
    code, output = invoke("train", "--data", data, "--out", tmp_path / "run", *TINY)
    assert code == 2
    assert "line 2" in output and "text" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--traffic", "medical=lots"], "'lots' of 'medical'"),
        (["--traffic", "astrology"], "astrology"),
        (["--concurrency", "0"], "--concurrency 0"),
        (["--repeat-share", "1.5"], "1.5"),
    ],
)
def test_bad_serving_options_are_clear_errors(
    args: list[str], message: str, checkpoint: Path
) -> None:
    code, output = invoke("infer", "--checkpoint", checkpoint, *args)
    assert code == 2, output
    assert "error:" in output and message in output
