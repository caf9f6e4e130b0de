"""observe as users get it: built into a wheel, installed in a fresh environment, run
outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(command: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_an_installed_wheel_migrates_trains_and_lists_its_run(tmp_path: Path) -> None:
    # Built from a copy: a build in the checkout leaves build/ there, and setuptools puts
    # whatever an earlier build left in build/ into the next wheel.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "runs")
    shutil.copytree(REPO, source, ignore=ignore)
    dist = tmp_path / "dist"
    # Offline: no build isolation, so the setuptools installed here builds it.
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source],
        tmp_path,
    )
    [wheel] = dist.glob("moe_observe-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    migrations = "observe/store/migrations/"
    assert {f"{migrations}env.py", f"{migrations}script.py.mako"} <= names
    assert any(n.startswith(f"{migrations}versions/") for n in names)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    python = venv / "bin" / "python"
    run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], tmp_path)
    # The dependencies are the ones installed here: the new environment reads this one's
    # site-packages after its own. Plain paths in a .pth file are not site directories,
    # so the .pth files there (the checkout's editable install among them) do not run.
    [own] = (venv / "lib").glob("python*/site-packages")
    (own / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "work"  # not the checkout: nothing there can be imported by accident
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVE_")}
    env.pop("PYTHONPATH", None)
    env |= {
        "OBSERVE_DB_URL": f"sqlite:///{tmp_path / 'observe.db'}",
        "OBSERVE_SPOOL_DIR": str(tmp_path / "spool"),
        "OBSERVE_PROMETHEUS_PORT": "0",
    }
    where = run([python, "-c", "import observe; print(observe.__file__)"], work, env)
    assert Path(where.strip()).is_relative_to(venv), where

    observe = venv / "bin" / "observe"
    run([observe, "db", "upgrade"], work, env)
    train = ["--model-size", "tiny", "--domain", "general", "--steps", "3", "--batch-size", "2"]
    train += ["--seq-len", "32", "--docs", "40", "--no-progress", "--out", str(tmp_path / "ckpt")]
    run([observe, "train", *train], work, env)
    [listed] = json.loads(run([observe, "runs", "--json"], work, env))
    assert listed["model"] == "ckpt" and listed["status"] == "finished", listed
    assert listed["samples"] > 0
