"""`observe train`, `observe infer` and `observe demo`: the reference workload, monitored.

Each opens a monitoring session (store, /metrics, OTLP) and attaches to the workload's
model from outside, as a user's code would. Heavy imports happen inside the commands, so
`observe --help` answers without loading torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from observe.cli.app import (
    DbUrl,
    OtlpEndpoint,
    PrometheusPort,
    app,
    console,
    explains_errors,
    settings,
)
from observe.errors import ObserveError


@app.command()
@explains_errors
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory for the checkpoint.")],
    config: Annotated[str, typer.Option(help="Model size: tiny, small or bench.")] = "small",
    domain: Annotated[
        str | None, typer.Option(help="Built-in corpus: medical, finance, legal or general.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Your own text: .txt (a document per line) or .jsonl (a 'text' field)."),
    ] = None,
    steps: Annotated[
        int, typer.Option(help="Optimizer steps in all, a resumed run's included.")
    ] = 200,
    batch_size: Annotated[int, typer.Option(help="Sequences per micro-batch.")] = 8,
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence.")] = 128,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-3,
    warmup: Annotated[int, typer.Option(help="Warm-up steps before cosine decay.")] = 10,
    freeze_below: Annotated[
        int, typer.Option(help="Train only layers from this index up (domain adapter).")
    ] = 0,
    resume: Annotated[
        Path | None, typer.Option(help="Checkpoint directory to continue from.")
    ] = None,
    docs: Annotated[int, typer.Option(help="Documents generated for a built-in domain.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed for data, weights and batches.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    db_url: DbUrl = None,
    prometheus_port: PrometheusPort = None,
    otlp_endpoint: OtlpEndpoint = None,
) -> None:
    """Fine-tune the reference MoE model on a domain or your own text."""
    from observe.pipeline import MonitoringSession
    from observe.workload.finetune import prepare_fine_tune
    from observe.workload.trainer import TrainConfig

    if domain is None and data is None:
        raise ObserveError("nothing to train on: pass --domain NAME or --data FILE")
    options = settings(
        ctx, db_url=db_url, prometheus_port=prometheus_port, otlp_endpoint=otlp_endpoint
    )
    run_config = {"config": config, "domain": domain, "data": data and str(data), "steps": steps}
    with MonitoringSession(options, model=out.name, config=run_config) as session:
        job = prepare_fine_tune(
            TrainConfig(
                steps=steps,
                batch_size=batch_size,
                seq_len=seq_len,
                grad_accum=grad_accum,
                lr=lr,
                warmup_steps=warmup,
                freeze_below=freeze_below,
                seed=seed,
            ),
            out,
            config_name=config,
            domain=domain,
            data_file=None if data is None else str(data),
            resume=resume,
            n_docs=docs,
            meter_provider=session.meter_provider,
        )
        monitor = session.attach(job.model)
        result = job.run(lambda _: monitor.step(), progress=progress)
        routing = monitor.snapshot()
    if result.steps:
        first, last = result.steps[0], result.steps[-1]
        console.print(
            f"trained to step {last.step} on {result.domain}: "
            f"loss {first.lm_loss:.3f} -> {last.lm_loss:.3f}"
        )
    console.print(f"checkpoint: {result.checkpoint}  run: {session.run_id}")
    console.print(routing.format(), highlight=False, soft_wrap=True)


@app.command()
@explains_errors
def infer(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint directory from `observe train`.")],
    traffic: Annotated[
        str,
        typer.Option(
            help="Domains per phase, phases in order: 'medical=1;finance=0.7,general=0.3'."
        ),
    ] = "medical;finance",
    requests: Annotated[int, typer.Option(help="Requests to replay.")] = 200,
    repeat_share: Annotated[
        float, typer.Option(help="Share of requests that repeat an earlier prompt.")
    ] = 0.3,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per request.")] = 24,
    top_p: Annotated[
        float | None, typer.Option(help="Nucleus sampling threshold; greedy when unset.")
    ] = None,
    cache_size: Annotated[int, typer.Option(help="Responses kept in the LRU cache.")] = 256,
    max_batch_size: Annotated[int, typer.Option(help="Requests batched together.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed for the traffic plan and sampling.")] = 0,
    db_url: DbUrl = None,
    prometheus_port: PrometheusPort = None,
    otlp_endpoint: OtlpEndpoint = None,
) -> None:
    """Serve a checkpoint with a replayed traffic mix; print throughput, latency, cache misses."""
    from observe.pipeline import MonitoringSession
    from observe.workload.checkpoint import load_checkpoint
    from observe.workload.generation import GenerationSettings
    from observe.workload.inference import InferenceEngine
    from observe.workload.traffic import TrafficSpec, plan_requests, replay

    if concurrency < 1:
        raise ObserveError(f"--concurrency {concurrency} must be at least 1")
    spec = TrafficSpec.parse(traffic)
    plan = plan_requests(spec, requests, repeat_share=repeat_share, seed=seed)
    generation = GenerationSettings(max_new_tokens=max_new_tokens, top_p=top_p)
    model = load_checkpoint(checkpoint).build_model()
    options = settings(
        ctx, db_url=db_url, prometheus_port=prometheus_port, otlp_endpoint=otlp_endpoint
    )
    run_config = {"checkpoint": str(checkpoint), "traffic": traffic, "requests": requests}
    with MonitoringSession(options, model=checkpoint.name, config=run_config) as session:
        monitor = session.attach(model)
        with InferenceEngine(
            model,
            cache_size=cache_size,
            max_batch_size=max_batch_size,
            seed=seed,
            on_batch=monitor.step,
            meter_provider=session.meter_provider,
        ) as engine:
            report = replay(engine, plan, concurrency=concurrency, settings=generation)
        routing = monitor.snapshot()
    console.print(report.format(), highlight=False, soft_wrap=True)
    console.print(routing.format(), highlight=False, soft_wrap=True)


@app.command()
@explains_errors
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Where the demo keeps its checkpoint.")] = Path(
        ".observe/demo"
    ),
    steps: Annotated[int, typer.Option(help="Training steps.")] = 120,
    requests: Annotated[int, typer.Option(help="Requests served after training.")] = 200,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    db_url: DbUrl = None,
    prometheus_port: PrometheusPort = None,
    otlp_endpoint: OtlpEndpoint = None,
) -> None:
    """Fine-tune on one domain, then serve traffic that shifts domain, and summarise."""
    from observe.demo import DemoConfig, run_demo

    options = settings(
        ctx, db_url=db_url, prometheus_port=prometheus_port, otlp_endpoint=otlp_endpoint
    )
    config = DemoConfig(train_steps=steps, requests=requests)
    result = run_demo(config, out, options, progress=progress)
    console.print(result.format(), highlight=False, soft_wrap=True)
