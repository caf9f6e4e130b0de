"""Router sampling: every count a user reads estimates all forwards', not the sampled ones'."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch

import observe
from observe import catalogue
from observe.hooks import MonitorConfig, RoutingStats, Window
from observe.hooks.buffers import WindowSums
from observe.hooks.stats import SCALARS, RoutingTotals
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.store.queries import expert_totals, find_run, query
from observe.workload.config import get_config
from observe.workload.model import MoETransformer

pytestmark = pytest.mark.usefixtures("one_thread")

RATE = 0.5
FORWARDS = 160
# Each estimate may miss its rate-1 total by this many standard errors. The estimate
# Σ xᵢ·Iᵢ / p over forwards kept with probability p has variance (1 − p)/p · Σ xᵢ².
TOLERANCE_SE = 4


class Recorder:
    """A sink keeping every window's statistics."""

    def __init__(self) -> None:
        self.windows: list[RoutingStats] = []

    def consume(self, window: Window) -> None:
        self.windows.append(window.routing)


def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The same left-padded batches for every run."""
    generator = torch.Generator().manual_seed(7)
    for _ in range(FORWARDS):
        ids = torch.randint(3, 250, (4, 12), generator=generator)
        lengths = torch.randint(3, 13, (4, 1), generator=generator)
        yield ids, (torch.arange(12) >= 12 - lengths).long()


def dropping_model() -> MoETransformer:
    torch.manual_seed(0)
    return MoETransformer(get_config("tiny", capacity_factor=0.5))


@pytest.fixture(scope="module")
def every_forward() -> tuple[RoutingStats, list[RoutingStats]]:
    """Every forward measured: the run's totals, and each forward's own (a window each)."""
    model, recorder = dropping_model(), Recorder()
    config = MonitorConfig(flush_every=1)
    with observe.attach(model, config, sinks=[recorder]) as monitor, torch.no_grad():
        for ids, mask in batches():
            model(ids, attention_mask=mask)
            monitor.step()
        return monitor.snapshot(), recorder.windows


def sampled_run(tmp_path: Path, store_url: str) -> tuple[RoutingStats, str]:
    """The same forwards at RATE, as a monitored run into the store."""
    model = dropping_model()
    settings = Settings(
        db_url=store_url,
        prometheus_port=None,
        spool_dir=tmp_path / "spool",
        monitor=MonitorConfig(flush_every=8, router_sample_rate=RATE, seed=11),
    )
    with MonitoringSession(settings, model="tiny") as session, torch.no_grad():
        monitor = session.attach(model)
        for ids, mask in batches():
            model(ids, attention_mask=mask)
            monitor.step()
        snapshot = monitor.snapshot()
    return snapshot, session.run_id


def figures(stats: RoutingStats) -> dict[str, int]:
    """Every count of a run or window, by name."""
    found = {}
    for s in stats.layers:
        found[f"tokens {s.layer}"] = s.tokens
        found[f"dropped {s.layer}"] = s.dropped_tokens or 0
        for expert, n in enumerate(s.tokens_per_expert):
            found[f"expert {s.layer}/{expert}"] = n
    return found


def latest(engine: sa.Engine, metric: catalogue.Metric, run: str) -> dict[tuple[str, ...], float]:
    """The newest stored sample of each series of `metric`, by its own labels' values."""
    rows = query(engine, metric.name, run=run)
    return {tuple(r.labels[k] for k in metric.labels): r.value for r in rows}


def test_sampled_counts_estimate_every_forwards_in_snapshots_exports_and_the_store(
    tmp_path: Path, store_url: str, every_forward: tuple[RoutingStats, list[RoutingStats]]
) -> None:
    full, windows = every_forward
    sampled, run = sampled_run(tmp_path, store_url)

    assert len(windows) == FORWARDS
    per_forward = [figures(w) for w in windows]
    truth, estimate = figures(full), figures(sampled)
    assert all(truth.values())
    for name, total in truth.items():
        se = np.sqrt((1 - RATE) / RATE * sum(f[name] ** 2 for f in per_forward))
        assert abs(estimate[name] - total) <= TOLERANCE_SE * se, name
        # The sampled forwards' own count is far off: the test tells the two apart.
        assert abs(estimate[name] * RATE - total) > TOLERANCE_SE * se, name

    # Ratios are the measured forwards' own, unscaled.
    for s, f in zip(sampled.layers, full.layers, strict=True):
        assert s.routing_entropy == pytest.approx(f.routing_entropy, abs=0.02)
        assert s.load_imbalance == pytest.approx(f.load_imbalance, rel=0.1)
    assert sampled.router_sample_rate == RATE
    assert "counts estimated from 50% of forwards" in sampled.format()

    # The store and the exported counters hold the snapshot's estimates exactly: each
    # window's estimate is rounded on top of the run's, so the windows add up to it.
    engine = sa.create_engine(store_url)
    try:
        stored = expert_totals(engine, run)
        exported = latest(engine, catalogue.EXPERT_TOKENS, run)
        dropped = latest(engine, catalogue.DROPPED_TOKENS, run)
        rate = latest(engine, catalogue.ROUTER_SAMPLE_RATE, run)
        record = find_run(engine, run)
    finally:
        engine.dispose()
    for s in sampled.layers:
        assert tuple(stored[s.layer]) == s.tokens_per_expert
        for expert, n in enumerate(s.tokens_per_expert):
            assert exported[(str(s.layer), str(expert))] == n
        assert dropped[(str(s.layer),)] == s.dropped_tokens
    assert rate == {(): RATE}
    assert record.config["monitor"]["router_sample_rate"] == RATE


def window_sums(rng: np.random.Generator, entropy_slots: int) -> WindowSums:
    """A window's device sums, made up: whole counts, fractional entropy and loss sums."""
    L, E = 2, 3
    scalars = rng.integers(0, 50, (L, len(SCALARS))).astype(np.float64)
    scalars[:, 1:5] *= rng.random((L, 4))
    return WindowSums(
        torch.from_numpy(scalars),
        torch.from_numpy(rng.integers(0, 20, (L, E))),
        torch.from_numpy(rng.integers(0, 9, (L, E, entropy_slots))),
        torch.tensor([3, 4]),
        None,
    )


def test_every_count_is_scaled_and_the_windows_add_up_to_the_run() -> None:
    rng = np.random.default_rng(0)
    names, drops = ["a", "b"], [True, True]
    sampled = RoutingTotals([3, 3], 2, sample_rate=0.3)
    unscaled = RoutingTotals([3, 3], 2)
    windows, raw_windows = [], []
    for _ in range(25):
        sums = window_sums(rng, 2)
        windows.append(sampled.add(sums).layer_stats(names, drops))
        raw_windows.append(unscaled.add(sums).layer_stats(names, drops))
    run = sampled.layer_stats(names, drops)
    raw = unscaled.layer_stats(names, drops)

    def scaled(n: int) -> int:
        return int(np.floor(n / 0.3 + 0.5))

    for layer, (s, r) in enumerate(zip(run, raw, strict=True)):
        assert s.tokens == scaled(r.tokens)
        assert s.dropped_tokens == scaled(r.dropped_tokens or 0)
        assert s.nonfinite_tokens == scaled(r.nonfinite_tokens)
        assert s.tokens_per_expert == tuple(map(scaled, r.tokens_per_expert))
        assert s.entropy_histogram == tuple(tuple(map(scaled, row)) for row in r.entropy_histogram)
        for ratio in ("routing_entropy", "top1_probability", "load_imbalance", "aux_loss"):
            assert getattr(s, ratio) == getattr(r, ratio)
        assert s.dead_experts == r.dead_experts
        ws = [w[layer] for w in windows]
        assert sum(w.tokens for w in ws) == s.tokens
        assert sum(w.nonfinite_tokens for w in ws) == s.nonfinite_tokens
        assert tuple(np.sum([w.tokens_per_expert for w in ws], axis=0)) == s.tokens_per_expert
        assert np.array_equal(
            np.sum([w.entropy_histogram for w in ws], axis=0), s.entropy_histogram
        )
        # A window that measured a token estimates at least one: its gauges are kept.
        raw_ws = [w[layer] for w in raw_windows]
        assert all(w.tokens >= 1 for w, r in zip(ws, raw_ws, strict=True) if r.tokens)


def test_the_run_records_the_rate_of_a_monitor_attached_with_its_own_config(
    tmp_path: Path, store_url: str
) -> None:
    settings = Settings(db_url=store_url, prometheus_port=None, spool_dir=tmp_path / "spool")
    with MonitoringSession(settings, model="tiny", config={"note": "kept"}) as session:
        engine = sa.create_engine(store_url)
        try:
            assert find_run(engine, session.run_id).config["monitor"]["router_sample_rate"] == 1
            session.attach(dropping_model(), MonitorConfig(router_sample_rate=0.25))
            config = find_run(engine, session.run_id).config
        finally:
            engine.dispose()
    assert config["monitor"]["router_sample_rate"] == 0.25
    assert config["monitor"]["metrics"] == sorted(MonitorConfig().metrics)
    assert config["note"] == "kept"
