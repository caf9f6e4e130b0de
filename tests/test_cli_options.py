from __future__ import annotations

import typer
from typer.testing import CliRunner

from observe.cli.options import config_options
from observe.workload.job_config import GenerationSettings


def test_every_generation_setting_is_an_option() -> None:
    got: list[GenerationSettings] = []
    app = typer.Typer()

    @app.command()
    @config_options("generation", GenerationSettings())
    def command(generation: GenerationSettings) -> None:
        got.append(generation)

    runner = CliRunner()
    assert runner.invoke(app, []).exit_code == 0
    args = ["--seed", "3", "--stop", "\n\n", "--stop", "END", "--top-p", "0.9"]
    assert runner.invoke(app, args).exit_code == 0
    assert got == [
        GenerationSettings(),
        GenerationSettings(top_p=0.9, seed=3, stop=("\n\n", "END")),
    ]
    assert "--stop" in runner.invoke(app, ["--help"]).output
