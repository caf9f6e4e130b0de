"""Training-step time and tokens/s of each reference model config, and batched generation.

Prints one row per config; `benchmarks/README.md` keeps the latest table. The `bench`
config is sized so one CPU training step takes a fraction of a second to a second.

    .venv/bin/python benchmarks/workload_step.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from observe.workload.config import CONFIGS
from observe.workload.generation import GenerationSettings
from observe.workload.inference import InferenceEngine
from observe.workload.model import MoETransformer

BATCH = {"tiny": (8, 32), "small": (8, 128), "bench": (8, 256)}


def train_step(model: MoETransformer, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> float:
    """One next-token training step on the token ids `x`; its wall time in seconds."""
    started = time.perf_counter()
    out = model(x[:, :-1], labels_BS=x[:, 1:])
    assert out.loss is not None
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def training_step_seconds(name: str, repeats: int) -> list[float]:
    torch.manual_seed(0)
    model = MoETransformer(CONFIGS[name])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch, seq = BATCH[name]
    x = torch.randint(0, 256, (batch, seq + 1))
    # The first step pays for allocation and warm-up.
    return [train_step(model, optimizer, x) for _ in range(repeats + 1)][1:]


def generation_tokens_per_s(name: str, requests: int = 32, new_tokens: int = 16) -> float:
    torch.manual_seed(0)
    model = MoETransformer(CONFIGS[name])
    settings = GenerationSettings(max_new_tokens=new_tokens)
    with InferenceEngine(model, cache_size=0, max_batch_size=8) as engine:
        engine.generate("warm up the engine", max_new_tokens=2)
        started = time.perf_counter()
        futures = [engine.submit(f"request number {i} about", settings) for i in range(requests)]
        generated = sum(f.result().new_tokens for f in futures)
    return generated / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| config | batch × seq | step s (median) | train tokens/s | generated tokens/s |")
    print("|---|---|---|---|---|")
    for name in CONFIGS:
        times = training_step_seconds(name, args.repeats)
        step = statistics.median(times)
        batch, seq = BATCH[name]
        print(
            f"| {name} | {batch} × {seq} | {step:.3f} | {batch * seq / step:,.0f} "
            f"| {generation_tokens_per_s(name):,.0f} |"
        )


if __name__ == "__main__":
    main()
