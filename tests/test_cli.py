"""The `observe` commands end to end on the tiny model, and their errors on bad input."""

import json
import re
from pathlib import Path

import pytest
import torch
from cli_runner import TINY, invoke

from observe.workload.checkpoint import load_checkpoint
from observe.workload.config import get_config

pytestmark = pytest.mark.usefixtures("isolated_store")


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
        (["train", "--out", "x", *TINY], "no training text was given"),
        (["train", "--domain", "astrology", "--out", "x", *TINY], "medical"),
        (
            ["train", "--domain", "legal", "--model-size", "huge", "--out", "x"],
            "tiny, small, bench",
        ),
        (["train", "--data", "/no/such/file.txt", "--out", "x", *TINY], "/no/such/file.txt"),
        (["train", "--domain", "legal", "--data", "a.txt", "--out", "x", *TINY], "one of"),
        (["train", "--domain", "legal", "--steps", "0", "--out", "x"], "steps=0"),
        (["train", "--domain", "legal", "--freeze-below", "5", "--out", "x", *TINY], "2 layers"),
        (["infer", "--checkpoint", "/no/such/run"], "no checkpoint at"),
    ],
)
def test_bad_input_is_a_clear_error(args: list[str], message: str, tmp_path: Path) -> None:
    before = invoke("runs", "--json")[1]
    code, output = invoke(*[str(tmp_path / a) if a == "x" else a for a in args])
    assert code == 2, output
    assert "error:" in output and message in output
    assert "Traceback" not in output
    # Checked before anything opened: no run was recorded, failed or otherwise.
    assert invoke("runs", "--json")[1] == before


def test_resuming_with_another_model_size_names_both(checkpoint: Path, tmp_path: Path) -> None:
    args = [a if a != "tiny" else "small" for a in TINY]
    code, output = invoke(
        "train", "--domain", "medical", "--resume", checkpoint, "--out", tmp_path, *args
    )
    assert code == 2, output
    assert "--model-size small does not match" in output and "tiny (2 layers" in output


def test_weights_that_do_not_fit_their_config_are_explained(
    checkpoint: Path, tmp_path: Path
) -> None:
    payload = torch.load(checkpoint / "checkpoint.pt", weights_only=True)
    payload["config"]["n_routed_experts"] = 8
    torch.save(payload, tmp_path / "checkpoint.pt")
    code, output = invoke("infer", "--checkpoint", tmp_path)
    assert code == 2, output
    assert "weights do not fit its own model config (2 layers" in output
    assert "Traceback" not in output


def test_train_config_flag_still_names_the_model_size(tmp_path: Path) -> None:
    """The old spelling of --model-size works, with a warning naming the new one."""
    args = [a if a != "--model-size" else "--config" for a in TINY]
    code, output = invoke("train", "--domain", "legal", "--out", tmp_path / "run", *args)
    assert code == 0, output
    assert "deprecated: use --model-size" in output
    assert load_checkpoint(tmp_path / "run").config == get_config("tiny")


def test_train_defaults_fit_the_model_size(tmp_path: Path) -> None:
    """No --seq-len: `tiny` (64 positions) trains at 64, not the default 128."""
    code, output = invoke(
        "train", "--model-size", "tiny", "--domain", "legal", "--steps", "1", "--batch-size",
        "2", "--docs", "40", "--no-progress", "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, output
    assert "trained to step 1 on legal" in output


def test_demo_trains_serves_and_summarises(tmp_path: Path) -> None:
    code, demo = invoke(
        "demo", "--model-size", "tiny", "--steps", "2", "--requests", "6", "--no-progress",
        "--out", tmp_path / "demo",
    )  # fmt: skip
    assert code == 0, demo
    assert "trained to step 2 on medical" in demo
    assert "routing while training:" in demo and "routing while serving:" in demo
    assert "miss rate" in demo
    assert "alerts on the serving run:" in demo and "ObserveSemanticDrift" in demo
    monitoring = tmp_path / "demo" / "monitoring"
    assert f"--config.file={monitoring.resolve()}/prometheus.yml" in demo
    assert (monitoring / "alerts" / "observe.rules.yml").exists()
    assert (monitoring / "dashboards" / "provisioning" / "alerting" / "observe.yml").exists()
    demo_runs = re.findall(r"run: (\S+)", demo)
    assert len(demo_runs) == 2, demo
    code, output = invoke("runs", "--json")
    runs = {r["id"]: r for r in json.loads(output)}
    for run in demo_runs:
        assert runs[run]["status"] == "finished" and runs[run]["samples"] > 0, runs[run]


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
        (["--concurrency", "0"], "concurrency=0"),
        (["--repeat-share", "1.5"], "1.5"),
    ],
)
def test_bad_serving_options_are_clear_errors(
    args: list[str], message: str, checkpoint: Path
) -> None:
    code, output = invoke("infer", "--checkpoint", checkpoint, *args)
    assert code == 2, output
    assert "error:" in output and message in output


def test_runs_and_query_read_the_store(checkpoint: Path) -> None:
    code, output = invoke("runs", "--json")
    assert code == 0, output
    runs = json.loads(output)
    # The training run, and the serving runs of the same checkpoint, share its model label.
    ours = [r for r in runs if r["model"] == checkpoint.name]
    assert ours and all(r["status"] == "finished" and r["samples"] > 0 for r in ours)
    train_run = min(ours, key=lambda r: r["started"])
    code, output = invoke(
        "query", "observe_moe_expert_tokens", "--run", train_run["id"], "--since", "1h", "--json"
    )
    assert code == 0, output
    rows = json.loads(output)
    assert rows and {"layer", "expert", "run", "model"} <= set(rows[0]["labels"])
    code, output = invoke("query", "observe_moe_expert_tokens", "--since", "soon")
    assert code == 2 and "soon" in output
    code, output = invoke("query", "observe_moe_expert_tokens", "--run", train_run["id"] + "x")
    assert code == 2 and f"did you mean {train_run['id']}" in output


def test_run_ids_are_never_cut_in_a_narrow_terminal(checkpoint: Path) -> None:
    code, output = invoke("runs", "--json")
    ids = [r["id"] for r in json.loads(output)]
    code, table = invoke("runs")  # the test runner's console is 80 columns wide
    assert code == 0 and all(run in table for run in ids), table


def test_db_commands_migrate_a_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, output = invoke("db", "current", "--db-url", url)
    assert code == 0 and output.strip() == "base"
    code, output = invoke("db", "upgrade", "--db-url", url)
    assert code == 0, output
    code, head = invoke("db", "current", "--db-url", url)
    assert head.strip() not in ("", "base")
    code, output = invoke("db", "downgrade", "base", "--db-url", url)
    assert code == 0 and "base" in output


def test_a_wrong_store_fails_before_training(tmp_path: Path) -> None:
    url = "postgresql://observe:hunter2@127.0.0.1:9/observe"
    code, output = invoke(
        "train", "--domain", "legal", "--db-url", url, "--out", tmp_path / "run", *TINY
    )
    assert code == 2
    assert "hunter2" not in output and "***" in output
    assert not (tmp_path / "run").exists()


def test_a_config_file_sets_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBSERVE_DB_URL")  # the environment would win over the file
    config = tmp_path / "observe.toml"
    config.write_text(f'db_url = "sqlite:///{tmp_path / "from-file.db"}"\n')
    code, output = invoke("--config", config, "db", "upgrade")
    assert code == 0, output
    assert (tmp_path / "from-file.db").exists()


def test_error_messages_keep_their_brackets(tmp_path: Path) -> None:
    """A message naming a settings table, e.g. [monitor], prints it, not drops it as markup."""
    config = tmp_path / "observe.toml"
    config.write_text("flush_every = 3\n")
    code, output = invoke("--config", config, "runs")
    assert code == 2, output
    assert "belong in the [monitor] table" in output
