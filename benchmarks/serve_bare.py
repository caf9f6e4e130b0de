"""Run A of `benchmarks/serve_load.py`: a checkpoint behind the server `observe serve` runs,
without observe (no session, no hooks; the engine's and the server's figures go to a no-op
meter provider), until SIGTERM. Then prints the batches its engine ran, as JSON.

    .venv/bin/python benchmarks/serve_bare.py CHECKPOINT PORT
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import time

from opentelemetry.metrics import NoOpMeterProvider
from serve_traffic import MODEL

from observe.workload.checkpoint import load_checkpoint
from observe.workload.inference import InferenceEngine
from observe.workload.job_config import ServerConfig
from observe.workload.server import http
from observe.workload.server.app import Service, Slots, create_app
from observe.workload.server.figures import ServerFigures
from observe.workload.server.openai_api import ServedModel


def main() -> None:
    checkpoint, port = sys.argv[1], int(sys.argv[2])
    model = load_checkpoint(checkpoint).build_model()
    # observe serve's defaults.
    config = ServerConfig(port=port)
    no_op = NoOpMeterProvider()
    with (
        InferenceEngine(
            model,
            cache_size=config.cache_size,
            max_batch_size=config.max_batch_size,
            seed=config.seed,
            meter_provider=no_op,
        ) as engine,
        contextlib.closing(http.bind(config.host, config.port)) as sock,
    ):
        served = ServedModel(MODEL, model.config.max_seq_len, int(time.time()))
        service = Service(engine, served, ServerFigures(no_op), Slots(config.max_queue))
        # As `observe serve` does (jobs.serve_http): start-up's objects out of full collections.
        gc.freeze()
        http.Server(create_app(service), config.drain_s).run(sockets=[sock])
        print(json.dumps({"batches": engine.stats.batches}), flush=True)


if __name__ == "__main__":
    main()
