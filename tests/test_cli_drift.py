"""`observe drift` end to end: a trained checkpoint's baseline, `observe infer` scoring
drift against it, status, baselines from a run, and an HTML report a browser renders."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_runner import invoke

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("isolated_store")]

TINY_TRAIN = ["--model-size", "tiny", "--steps", "20", "--batch-size", "8", "--docs", "200",
              "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A checkpoint trained on medical text, then serving medical and finance prompts; the
    serving run's id."""
    out = tmp_path_factory.mktemp("ckpt") / "medical"
    code, output = invoke("train", "--domain", "medical", "--out", out, *TINY_TRAIN)
    assert code == 0, output
    assert "drift baseline 1 for model 'medical'" in output
    code, output = invoke(
        "infer", "--checkpoint", out, "--traffic", "medical;finance", "--requests", "512",
        "--concurrency", "32", "--max-batch-size", "32", "--max-new-tokens", "1",
        "--repeat-share", "0",
    )  # fmt: skip
    assert code == 0, output
    assert "drift per traffic phase" in output
    return output.split("run: ")[1].split()[0]


def test_status_shows_the_latest_score_per_layer_and_method(served: str) -> None:
    code, output = invoke("drift", "status", "--json")
    assert code == 0, output
    rows = json.loads(output)
    semantic = [r for r in rows if r["kind"] == "semantic"]
    assert {(r["layer"], r["method"]) for r in semantic} == {(0, "classifier"), (1, "classifier")}
    for r in rows:
        assert {"layer", "method", "score", "threshold", "drifted", "window_end"} <= set(r)
        assert r["run"] == served and 0 <= r["score"] <= 1
    assert all(r["threshold"] is not None for r in semantic)
    code, table = invoke("drift", "status", "--run", served)
    assert code == 0 and "classifier" in table and "jensen_shannon" in table


def test_a_baseline_from_a_run_and_switching_back(served: str) -> None:
    code, output = invoke("drift", "baseline", "--run", served)
    assert code == 0, output
    assert "baseline 2 for model 'medical'" in output and "(active)" in output
    code, output = invoke("drift", "baselines", "--json")
    listed = {b["id"]: b for b in json.loads(output)}
    assert listed[2]["active"] and not listed[1]["active"] and listed[2]["run"] == served
    code, output = invoke("drift", "baselines", "--activate", "1")
    assert code == 0 and "baseline 1 is now model 'medical'" in output


def test_the_report_renders_in_a_browser_without_script_errors(served: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    code, output = invoke("drift", "report", "--run", served, "--out", page)
    assert code == 0, output
    text = page.read_text()
    assert f"Drift of run {served}" in text and "<svg" in text
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: `make test` installs it"
    result = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    # Evidently's script built the report: its widgets are in the rendered page.
    assert "Drift in embeddings" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drift", "status", "--run", "no-such-run"], "no run 'no-such-run'"),
        (["drift", "baseline", "--run", "no-such-run"], "no run 'no-such-run'"),
        (["drift", "baselines", "--activate", "99"], "no baseline 99"),
        (["drift", "report", "--run", "x", "--out", "r.html", "--method", "vibes"], "vibes"),
    ],
)
@pytest.mark.usefixtures("served")
def test_bad_drift_input_is_a_clear_error(args: list[str], message: str) -> None:
    code, output = invoke(*args)
    assert code == 2, output
    assert "error:" in output and message in output and "Traceback" not in output
