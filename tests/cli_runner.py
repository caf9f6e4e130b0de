"""The `observe` commands in-process, as a test calls them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from observe.cli import app

runner = CliRunner()
TINY = [
    "--model-size",
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
