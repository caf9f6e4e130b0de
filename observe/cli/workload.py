"""`observe train`, `observe infer` and `observe demo`: the reference workload, monitored.

Their options come from the job configs in `observe.workload.job_config`; the runs
themselves are `observe.jobs`. Heavy imports happen inside the commands, so `observe
--help` answers without loading torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from observe.cli.app import (
    DbUrl,
    OtlpEndpoint,
    PrometheusPort,
    app,
    console,
    errors,
    explains_errors,
    settings,
    shown,
)
from observe.cli.options import config_options
from observe.workload.job_config import (
    DemoConfig,
    FineTuneConfig,
    GenerationSettings,
    ServeConfig,
    ServerConfig,
    TrainConfig,
)

Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]
DriftFlag = Annotated[
    bool,
    typer.Option(
        help="Score drift against the model's active baseline ([drift] settings say how)."
    ),
]


@app.command()
@explains_errors
@config_options("job", FineTuneConfig())
@config_options("config", TrainConfig())
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory for the checkpoint.")],
    job: FineTuneConfig,
    config: TrainConfig,
    model_size_flag: Annotated[
        str | None, typer.Option("--config", hidden=True, help="Deprecated: --model-size.")
    ] = None,
    progress: Progress = True,
    db_url: DbUrl = None,
    prometheus_port: PrometheusPort = None,
    otlp_endpoint: OtlpEndpoint = None,
) -> None:
    """Fine-tune the reference MoE model on a domain or your own text."""
    from observe import jobs

    if model_size_flag is not None:
        errors.print(
            "warning: `observe train --config SIZE` is deprecated: use --model-size SIZE "
            "(`observe --config FILE` names a settings file)",
            highlight=False,
        )
        job = dataclasses.replace(job, model_size=model_size_flag)
    options = settings(
        ctx, db_url=db_url, prometheus_port=prometheus_port, otlp_endpoint=otlp_endpoint
    )
    training = jobs.train(options, job, config, out, progress=progress)
    console.print(training.format(), highlight=False, markup=False, soft_wrap=True)


@app.command()
@explains_errors
@config_options("config", ServeConfig())
@config_options(
    "generation", GenerationSettings(max_new_tokens=24), only=("max_new_tokens", "top_p")
)
def infer(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint directory from `observe train`.")],
    config: ServeConfig,
    generation: GenerationSettings,
    drift: DriftFlag = True,
    db_url: DbUrl = None,
    prometheus_port: PrometheusPort = None,
    otlp_endpoint: OtlpEndpoint = None,
) -> None:
    """Serve a checkpoint with a replayed traffic mix; print throughput, latency, cache
    misses and drift per phase against the checkpoint's active baseline."""
    from observe import jobs
    from observe.workload.checkpoint import load_checkpoint
    from observe.workload.traffic import TrafficSpec

    TrafficSpec.parse(config.traffic)  # a bad mix is an error before the model loads
    loaded = load_checkpoint(checkpoint)
    options = settings(
        ctx, db_url=db_url, prometheus_port=prometheus_port, otlp_endpoint=otlp_endpoint
    )
    serving = jobs.serve(
        options,
        loaded.build_model(),
        checkpoint.name,
        config,
        generation,
        drift=options.drift if drift else None,
        trained_until=loaded.trained_until,
    )
    console.print(serving.format(), highlight=False, markup=False, soft_wrap=True)


@app.command()
@explains_errors
@config_options("config", ServerConfig())
def serve(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint directory from `observe train`.")],
    config: ServerConfig,
    drift: DriftFlag = True,
    db_url: DbUrl = None,
    prometheus_port: PrometheusPort = None,
    otlp_endpoint: OtlpEndpoint = None,
) -> None:
    """Serve a checkpoint over an OpenAI-compatible HTTP API (/v1/completions,
    /v1/chat/completions, /v1/models), monitored live, until SIGTERM or Ctrl-C."""
    from observe import jobs
    from observe.workload.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    options = settings(
        ctx, db_url=db_url, prometheus_port=prometheus_port, otlp_endpoint=otlp_endpoint
    )
    run_id = jobs.serve_http(
        options,
        loaded.build_model(),
        checkpoint.name,
        config,
        drift=options.drift if drift else None,
        trained_until=loaded.trained_until,
    )
    console.print(Text("observe serve: run ") + shown(run_id) + Text(" ended"), highlight=False)


DEMO = DemoConfig()


@app.command()
@explains_errors
@config_options("fine_tune", DEMO.fine_tune, only=("model_size", "domain"))
@config_options("train_config", DEMO.train, only=("steps",))
@config_options("serve", DEMO.serve, only=("traffic", "requests"))
@config_options("server", ServerConfig(), only=("host", "port"))
def demo(
    ctx: typer.Context,
    fine_tune: FineTuneConfig,
    train_config: TrainConfig,
    serve: ServeConfig,
    server: ServerConfig,
    out: Annotated[Path, typer.Option(help="Where the demo keeps its checkpoint.")] = Path(
        ".observe/demo"
    ),
    serve_after: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="End by serving the fine-tuned model over HTTP, as `observe serve` does, "
            "until Ctrl-C.",
        ),
    ] = False,
    progress: Progress = True,
    db_url: DbUrl = None,
    prometheus_port: PrometheusPort = None,
    otlp_endpoint: OtlpEndpoint = None,
) -> None:
    """Fine-tune on one domain, then serve traffic that shifts domain, and summarise."""
    from observe.cli.alerts import alert_table
    from observe.demo import run_demo

    options = settings(
        ctx, db_url=db_url, prometheus_port=prometheus_port, otlp_endpoint=otlp_endpoint
    )
    config = dataclasses.replace(DEMO, fine_tune=fine_tune, train=train_config, serve=serve)
    result = run_demo(config, out, options, progress=progress)
    console.print(result.format(), highlight=False, markup=False, soft_wrap=True)
    console.print("alerts on the serving run:", highlight=False)
    console.print(alert_table(result.alerts))
    console.print(result.next_steps(), highlight=False, markup=False, soft_wrap=True)
    if serve_after:
        from observe import jobs

        trained = result.training.result
        jobs.serve_http(
            options,
            trained.model,
            out.name,
            server,
            drift=options.drift,
            trained_until=trained.trained_until,
        )
