"""Hostile text as run ids, model names and label values: kept verbatim by the store on both
engines, `/metrics` and a real Prometheus, printed back exactly by `--json` and shown, never
interpreted, by the tables; what the store cannot keep (NUL, a lone surrogate, an over-long
identifier) is refused with a message saying so, never altered."""

from __future__ import annotations

import json
import random
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_runner import invoke
from conftest import ENGINES
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import Prometheus, StartPrometheus
from sqlalchemy import select

from observe import catalogue
from observe.alerts.signals import promql_string
from observe.catalogue import MAX_IDENTIFIER_CHARS
from observe.distributed import new_run_id
from observe.errors import ObserveError
from observe.hooks import MonitorConfig
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.store.delivery import Delivery
from observe.store.engine import connect
from observe.store.queries import list_runs, query
from observe.store.records import Batch, Sample
from observe.store.schema import SAMPLES, SERIES
from observe.store.writer import Store
from observe.workload.config import get_config
from observe.workload.model import MoETransformer

HOSTILE = [
    'say "hi"',
    "C:\\path\\",
    "two\nlines\r\ttab",
    "'; DROP TABLE runs; --",
    '{}=,|~!"',
    "ünï 😀 \u202eRTL\u200b zero\u200dwidth",
    "[bold]x[/] [red]",
    "\x1b[2J",
    " ",
]
# The longest run id or model name there may be, of characters that each need escaping.
LONGEST_ID = ('"\\\n' * MAX_IDENTIFIER_CHARS)[:MAX_IDENTIFIER_CHARS]
IDENTIFIERS = [*HOSTILE, LONGEST_ID]
# 100,000 characters that do not compress: PostgreSQL's B-tree refused such labels before.
_rng = random.Random(0)
LONG = "".join(chr(_rng.randrange(0x20, 0xD800)) for _ in range(100_000))
LABEL_VALUES = [*HOSTILE, LONG]
METRIC = "observe_moe_routing_entropy"


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module", params=ENGINES)
def hostile_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store on each engine with a run per hostile identifier, its model the same text,
    holding a gauge sample per hostile label value."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'store.db'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    store = Store.open(url)
    try:
        for value in IDENTIFIERS:
            store.start_run(value, value, {"note": value})
            samples = tuple(
                Sample(now(), METRIC, {"run": value, "model": value, "layer": label}, float(i))
                for i, label in enumerate(LABEL_VALUES)
            )
            store.write(Batch(value, samples))
    finally:
        store.close()
    return url


def test_the_store_keeps_hostile_text_verbatim(hostile_store: str) -> None:
    store = Store.open(hostile_store)
    runs = {r.id: r for r in list_runs(store.engine)}
    assert set(IDENTIFIERS) <= set(runs)
    assert all(runs[i].model == i and runs[i].samples == len(LABEL_VALUES) for i in IDENTIFIERS)
    for value in IDENTIFIERS:
        rows = query(store.engine, METRIC, run=value)
        expected = [{"run": value, "model": value, "layer": label} for label in LABEL_VALUES]
        assert sorted((dict(r.labels) for r in rows), key=str) == sorted(expected, key=str)
    # Written again, in another order, the same labels are the same series.
    run = HOSTILE[0]
    store.write(Batch(run, (Sample(now(), "long", {"run": run, "x": LONG}, 1),)))
    Store(store.engine).write(Batch(run, (Sample(now(), "long", {"x": LONG, "run": run}, 2),)))
    statement = (
        select(SAMPLES.c.series_id)
        .join(SERIES, SERIES.c.id == SAMPLES.c.series_id)
        .where(SERIES.c.run_id == run)
    )
    with store.engine.connect() as connection:
        ids = connection.execute(statement.where(SERIES.c.name == "long")).scalars().all()
    store.close()
    assert len(ids) == 2 and len(set(ids)) == 1


def test_runs_and_query_print_hostile_text_back_exactly_as_json(hostile_store: str) -> None:
    code, output = invoke("runs", "--json", "--db-url", hostile_store)
    assert code == 0, output
    assert {(r["id"], r["model"]) for r in json.loads(output)} >= {(i, i) for i in IDENTIFIERS}
    for value in (HOSTILE[2], LONGEST_ID):
        code, output = invoke("query", METRIC, "--run", value, "--json", "--db-url", hostile_store)
        assert code == 0, output
        layers = sorted(r["labels"]["layer"] for r in json.loads(output))
        assert layers == sorted(LABEL_VALUES)


def test_tables_show_hostile_text_without_reading_it(
    hostile_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "500")  # cells whole on a line, to look for them
    code, runs = invoke("runs", "--db-url", hostile_store)
    assert code == 0, runs
    run = HOSTILE[6]
    code, samples = invoke("query", METRIC, "--run", run, "--db-url", hostile_store)
    assert code == 0, samples
    for output in (runs, samples):
        assert "[bold]x[/]" in output  # markup shown as written, not applied
        assert "\x1b" not in output and "\u202e" not in output
        assert r"\x1b[2J" in output and r"\u202eRTL\u200b" in output
    assert r"two\nlines\r\ttab" in runs
    # The 100,000 characters are cut short: `--json` has them all.
    labels = f"layer={LONG},model={run},run={run}"
    assert f"… ({len(labels):,}" in samples
    assert len(samples) < 10 * len(LABEL_VALUES) * MAX_IDENTIFIER_CHARS


def test_alert_status_keeps_hostile_labels(
    hostile_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alert evaluated on the store names its series with the labels as stored."""
    run = "[bold]alert[/]\n'; --"
    labels = {"run": run, "model": HOSTILE[2], "layer": "0", "method": HOSTILE[3]}
    store = Store.open(hostile_store)
    store.start_run(run, HOSTILE[2], {})
    store.write(Batch(run, (Sample(now(), catalogue.SEMANTIC_DRIFTED_WINDOWS.name, labels, 2),)))
    store.close()
    code, output = invoke("alerts", "status", "--run", run, "--json", "--db-url", hostile_store)
    assert code == 0, output
    [row] = [r for r in json.loads(output) if r["rule"] == "ObserveSemanticDrift"]
    assert (row["state"], row["labels"]) == ("firing", labels)
    monkeypatch.setenv("COLUMNS", "500")
    code, table = invoke("alerts", "status", "--run", run, "--db-url", hostile_store)
    assert code == 0 and r"run=[bold]alert[/]\n'; --" in table, table


@pytest.mark.parametrize(
    ("model", "run_id", "problem"),
    [
        ("a\x00b", None, "model name 'a\\\\x00b' holds a NUL character"),
        ("ok", "run\x00", "run id 'run\\\\x00' holds a NUL character"),
        ("\udcff", None, "is not valid Unicode"),
        ("m" * (MAX_IDENTIFIER_CHARS + 1), None, f"over the {MAX_IDENTIFIER_CHARS}"),
        ("ok", "r" * (MAX_IDENTIFIER_CHARS + 1), "run id 'rrr"),
    ],
)
def test_text_the_store_cannot_keep_is_refused_before_a_run_starts(
    tmp_path: Path, model: str, run_id: str | None, problem: str
) -> None:
    with pytest.raises(ObserveError, match=problem):
        MonitoringSession(settings(tmp_path), model=model, run_id=run_id)
    assert not (tmp_path / "observe.db").exists()  # refused before the store was opened


def test_the_store_refuses_what_it_cannot_keep_with_the_reason(store: Store) -> None:
    with pytest.raises(ObserveError, match="run id '\\\\udcff' is not valid Unicode"):
        store.start_run("\udcff", "model", {})
    bad = Sample(now(), METRIC, {"layer": "a\x00b"}, 1.0)
    with pytest.raises(ObserveError, match=f"a series of {METRIC}: label 'layer'.*NUL"):
        store.write(Batch("refused", (bad,)))
    # Nothing of the refused batch was written.
    assert "refused" not in {r.id for r in list_runs(store.engine)}


def test_rows_postgresql_refuses_for_good_are_set_aside_not_retried(
    pg_url: str, tmp_path: Path
) -> None:
    """An index entry over PostgreSQL's limit (here a 100,000-character metric name, which
    is not hashed) is no outage: retried, it would hold up every batch behind it."""
    delivery = Delivery(pg_url, tmp_path / "spool", retry_initial_s=0.05)
    delivery.submit(Batch("limits", (Sample(now(), LONG, {}, 1.0),)))
    delivery.submit(Batch("limits", (Sample(now(), METRIC, {"layer": LONG}, 2.0),)))
    delivery.close(timeout_s=60)
    stats = delivery.stats()
    assert (stats.rejected_samples, stats.spooled_samples) == (1, 0)
    engine = connect(pg_url)
    try:
        [row] = query(engine, METRIC, run="limits")
    finally:
        engine.dispose()
    assert (row.labels, row.value) == ({"layer": LONG}, 2.0)


def test_a_generated_run_id_fits_the_longest_model_name() -> None:
    model = "m" * MAX_IDENTIFIER_CHARS
    run_id = new_run_id(model)
    assert len(run_id) == MAX_IDENTIFIER_CHARS and run_id.startswith("m" * 200)


def test_a_module_name_the_store_cannot_keep_is_refused_at_attach(tmp_path: Path) -> None:
    model = MoETransformer(get_config("tiny"))
    model.layers[0].add_module("odd\x00name", torch.nn.Identity())
    with (
        MonitoringSession(settings(tmp_path), model="tiny") as session,
        pytest.raises(ObserveError, match=r"module name 'layers.0.odd\\x00name'.*NUL"),
    ):
        session.attach(model)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db_url": f"sqlite:///{tmp_path / 'observe.db'}",
        "prometheus_port": 0,
        "prometheus_linger_s": 0,
        "spool_dir": tmp_path / "spool",
        "monitor": MonitorConfig(flush_every=2),
    }
    return Settings(**{**values, **overrides})


def scrape(port: int | None) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def series(prometheus: Prometheus, promql: str, count: int) -> list[dict[str, Any]]:
    """The series of `promql` once Prometheus has scraped `count` of them."""
    deadline = time.monotonic() + 60
    found = prometheus.query(promql)
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.5)
        found = prometheus.query(promql)
    return found


@pytest.mark.slow
def test_a_monitored_runs_hostile_labels_reach_metrics_prometheus_and_the_store(
    tmp_path: Path, prometheus: StartPrometheus, caplog: pytest.LogCaptureFixture
) -> None:
    """The run's id and model, and the attributes of the user's own counter on the run's
    meter provider: exact in /metrics, in Prometheus and in the store. An attribute with
    NUL is left out of the store (counted), one with a lone surrogate out of both."""
    run_id, model_name = HOSTILE[2] + HOSTILE[0], HOSTILE[6] + HOSTILE[5]
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    # Exports only when asked, and at the end: the counts below are exact.
    options = settings(tmp_path, export_interval_s=3600)
    session = MonitoringSession(options, model=model_name, run_id=run_id)
    with session:
        monitor = session.attach(model)
        with torch.no_grad():
            for _ in range(2):
                model(torch.randint(3, 250, (2, 8)))
                monitor.step()
        monitor.snapshot()
        requests = session.meter_provider.get_meter("users.app").create_counter("requests")
        for tenant in [*LABEL_VALUES, "a\x00b", "\udcff"]:
            requests.add(1, {"tenant": tenant})
        session.meter_provider.force_flush()  # an export to the store, which refuses two

        samples = [
            sample
            for family in text_string_to_metric_families(scrape(session.metrics_port))
            for sample in family.samples
        ]
        exposed = {s.labels["tenant"]: s.labels for s in samples if s.name == "requests_total"}
        [refused] = [
            s.value
            for s in samples
            if s.name == catalogue.DROPPED_SAMPLES.prometheus_name
            and s.labels["reason"] == catalogue.UNSTORABLE_LABEL
        ]
        assert refused == 2
        assert set(exposed) == {*LABEL_VALUES, "a\x00b"}
        assert all(
            (labels["run"], labels["model"]) == (run_id, model_name) for labels in exposed.values()
        )

        with prometheus([f"127.0.0.1:{session.metrics_port}"]) as server:
            scraped = series(server, "requests_total", len(exposed))
            assert sorted(s["metric"]["tenant"] for s in scraped) == sorted(exposed)
            assert {(s["metric"]["run"], s["metric"]["model"]) for s in scraped} == {
                (run_id, model_name)
            }
            # observe's own series, selected by the hostile labels as PromQL quotes them.
            selector = f"run={promql_string(run_id)},model={promql_string(model_name)}"
            tokens = series(server, f"observe_moe_expert_tokens_total{{{selector}}}", 1)
            assert tokens, selector

    engine = session.store.engine
    try:
        assert [(r.id, r.model) for r in list_runs(engine)] == [(run_id, model_name)]
        stored = {r.labels["tenant"] for r in query(engine, "requests", run=run_id)}
        dropped = query(engine, catalogue.DROPPED_SAMPLES.name, run=run_id)
    finally:
        engine.dispose()
    assert stored == set(LABEL_VALUES)
    # Counted as the last export began: the two refused by the one before.
    assert [r.value for r in dropped if r.labels["reason"] == catalogue.UNSTORABLE_LABEL] == [
        0,
        2,
    ]
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("the store leaves out samples of requests" in w for w in warnings) == 1
    assert sum("/metrics leaves out series of requests" in w for w in warnings) == 1
