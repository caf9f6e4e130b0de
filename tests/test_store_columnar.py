"""Dense figures as arrays: families and expert loads from the batch to the store's rows,
once each, on both engines; spool lines of the older per-row form still replay."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import label_sets

from observe.errors import ObserveError
from observe.store.alerting import samples
from observe.store.queries import expert_totals, list_runs, query
from observe.store.records import Batch, ExpertLoads, Family, Sample
from observe.store.series import family_labels_texts, labels_text
from observe.store.writer import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SLOTS = "observe_moe_slot_tokens"
LAYERS, EXPERTS, SLOT_LE = 3, 4, 2


def window(run: str, step: int) -> Batch:
    """A window as an exporter of dense families makes it: a layer × expert × slot family,
    one sparse sample beside it, and the window's expert loads."""
    values = np.arange(LAYERS * EXPERTS * SLOT_LE, dtype=np.float64) + 1000 * step
    family = Family.grid(
        T0 + timedelta(seconds=step),
        SLOTS,
        {"run": run, "model": "tiny"},
        {"layer": range(LAYERS), "expert": range(EXPERTS), "slot_le": ("0.5", "+Inf")},
        values.reshape(LAYERS, EXPERTS, SLOT_LE),
    )
    loads = ExpertLoads.of_layers(step, {layer: [step] * EXPERTS for layer in range(LAYERS)})
    sparse = Sample(T0 + timedelta(seconds=step), "observe_steps", {"run": run}, float(step))
    return Batch(run, samples=(sparse,), expert_loads=(loads,), families=(family,))


def test_columnar_batches_round_trip_through_json() -> None:
    batch = window("r", 3)
    line = batch.to_json()
    assert Batch.from_json(line) == batch
    assert len(batch) == 1 + LAYERS * EXPERTS + LAYERS * EXPERTS * SLOT_LE
    # Arrays, not a JSON object per point: the family is one base64 string.
    [family] = json.loads(line)["families"]
    assert isinstance(family[4], str)
    assert Batch.from_json(line) != window("r", 4)


def test_a_family_of_the_wrong_size_is_explained() -> None:
    with pytest.raises(ObserveError, match="6 values for a grid of"):
        Family.grid(T0, SLOTS, {}, {"layer": range(2), "expert": range(2)}, np.zeros(6))


def test_a_family_is_stored_as_one_block_and_read_per_series(store: Store) -> None:
    store.write(window("dense", 1))
    store.write(window("dense", 2))
    with store.engine.connect() as connection:
        blocks = connection.execute(sa.text("SELECT count(*) FROM sample_blocks")).scalar_one()
    assert blocks == 2
    rows = query(store.engine, SLOTS, run="dense")
    assert len(rows) == 2 * LAYERS * EXPERTS * SLOT_LE
    first = rows[: LAYERS * EXPERTS * SLOT_LE]
    assert [r.value for r in first] == [1000.0 + i for i in range(LAYERS * EXPERTS * SLOT_LE)]
    assert dict(first[1].labels) == {
        "run": "dense", "model": "tiny", "layer": "0", "expert": "0", "slot_le": "+Inf",
    }  # fmt: skip
    # A store that never saw the family finds its series rather than making them again.
    again = Store(store.engine)
    again.write(window("dense", 3))
    with store.engine.connect() as connection:
        series = connection.execute(sa.text("SELECT count(*) FROM series")).scalar_one()
    assert series == LAYERS * EXPERTS * SLOT_LE + 1
    [run] = [r for r in list_runs(store.engine) if r.id == "dense"]
    assert run.samples == 3 * (LAYERS * EXPERTS * SLOT_LE + 1)
    assert expert_totals(store.engine, "dense") == {layer: [6] * EXPERTS for layer in range(3)}


def test_a_familys_labels_are_the_canonical_text_of_each_series(store: Store) -> None:
    """Formatted from fragments, a family's labels read as each series' own canonical text,
    whatever they hold: quotes, braces, backslashes, non-ASCII, a label of two axes, an
    axis that takes a shared label's name."""
    family = Family(
        T0,
        SLOTS,
        {"run": "odd", "zone": '{"a": 1}', "layer": "shadowed", "note": "é\\n\t}{"},
        (
            (("layer",), (("0",), ("{1}",))),
            (("expert", "group"), (("0", 'g"1'), ("ü", "}{{"))),
        ),
        np.arange(4.0),
    )
    assert family_labels_texts(family) == [labels_text(labels) for labels in label_sets(family)]
    store.write(Batch("odd", families=(family,)))
    rows = query(store.engine, SLOTS, run="odd")
    assert [dict(r.labels) for r in rows] == label_sets(family)
    assert [r.value for r in rows] == [0.0, 1.0, 2.0, 3.0]


def test_a_family_of_no_series_is_stored_beside_the_rest(store: Store) -> None:
    """A monitor of no MoE layer (a pipeline stage) exports families over an empty axis."""
    empty = Family.grid(T0, SLOTS, {"run": "none"}, {"layer": [], "expert": range(4)}, [])
    step = Sample(T0, "observe_steps", {"run": "none"}, 1.0)
    store.write(Batch("none", samples=(step,), families=(empty,)))
    assert [r.value for r in query(store.engine, "observe_steps", run="none")] == [1.0]
    with store.engine.connect() as connection:
        made = sa.text("SELECT count(*) FROM series WHERE run_id = 'none' AND name = :name")
        assert connection.execute(made, {"name": SLOTS}).scalar_one() == 0


def test_a_family_label_the_store_cannot_keep_is_explained(store: Store) -> None:
    family = Family.grid(T0, SLOTS, {"run": "bad"}, {"layer": ["0", "a\x00b"]}, np.zeros(2))
    with pytest.raises(ObserveError, match=f"a series of {SLOTS}: .*NUL"):
        store.write(Batch("bad", families=(family,)))


def test_a_columnar_batch_sent_again_is_written_once(store: Store) -> None:
    batch = Batch.from_json(window("once", 1).to_json())
    store.write(batch, delivery_id="c" * 32)
    store.write(batch, delivery_id="c" * 32)
    [run] = [r for r in list_runs(store.engine) if r.id == "once"]
    assert run.samples == 1 + LAYERS * EXPERTS * SLOT_LE
    assert len(query(store.engine, SLOTS, run="once")) == LAYERS * EXPERTS * SLOT_LE
    assert expert_totals(store.engine, "once") == {layer: [1] * EXPERTS for layer in range(3)}


def test_spool_lines_of_the_per_row_form_replay(store: Store) -> None:
    # As the spool held a batch before arrays: a list per sample and per expert load.
    old = {
        "run_id": "old",
        "samples": [[T0.isoformat(), "observe_steps", {"run": "old"}, math.inf]],
        "histograms": [],
        "expert_loads": [[5, 0, 0, 7], [5, 0, 1, 3], [6, 0, 0, 1]],
    }
    batch = Batch.from_json(json.dumps(old))
    assert [(e.step, e.tokens.tolist()) for e in batch.expert_loads] == [(5, [7, 3]), (6, [1])]
    store.write(batch, delivery_id="d" * 32)
    store.write(batch, delivery_id="d" * 32)
    assert expert_totals(store.engine, "old") == {0: [8, 3]}
    assert [r.value for r in query(store.engine, "observe_steps", run="old")] == [math.inf]


def test_figures_for_one_step_add_up(store: Store) -> None:
    # Two windows that end at one step, or two ranks' counts: one row with the total.
    store.write(Batch("sum", expert_loads=(ExpertLoads(4, [0, 0], [0, 1], [5, 1]),)))
    store.write(Batch("sum", expert_loads=(ExpertLoads(4, [0], [0], [2]),)))
    assert expert_totals(store.engine, "sum") == {0: [7, 1]}


def test_one_copy_per_table_per_batch(pg_url: str, copy_statements: list[str]) -> None:
    store = Store.open(pg_url)
    batch = window("copied", 1)
    store.write(Batch("copied", batch.samples, expert_loads=batch.expert_loads,
                      families=batch.families * 2))  # fmt: skip
    tables = [s.split(" (")[0] for s in copy_statements]
    assert tables == ["COPY samples", "COPY sample_blocks", "COPY staged_expert_load"]
    [run] = [r for r in list_runs(store.engine) if r.id == "copied"]
    assert run.samples == 1 + 2 * LAYERS * EXPERTS * SLOT_LE
    store.close()


def test_blocks_are_arrays_that_sql_reads(pg_url: str) -> None:
    """On PostgreSQL a block's ids and values are int4[] and float8[]: SQL unnests them into
    the same points `query` gives, series by series."""
    store = Store.open(pg_url)
    store.write(window("sql", 1))
    with store.engine.connect() as connection:
        points = connection.execute(
            sa.text(
                "SELECT s.labels->>'layer', s.labels->>'expert', s.labels->>'slot_le', u.value "
                "FROM sample_blocks AS b, unnest(b.series_ids, b.series_values) "
                "AS u(series_id, value) JOIN series AS s ON s.id = u.series_id "
                "WHERE b.run_id = 'sql' ORDER BY u.value"
            )
        ).all()
    read = query(store.engine, SLOTS, run="sql")
    assert [tuple(p) for p in points] == [
        (r.labels["layer"], r.labels["expert"], r.labels["slot_le"], r.value) for r in read
    ]
    store.close()


def test_rows_and_blocks_read_as_one_metric(store: Store) -> None:
    """Families stored as rows before sample blocks (revision 0007) read beside blocks,
    oldest first, in `query` and in the alert evaluator's read."""
    store.write(window("mixed", 2))
    old = window("mixed", 1)
    [family] = old.families
    labels = label_sets(family)
    store.write(
        Batch(
            "mixed",
            samples=tuple(
                Sample(family.time, SLOTS, each, float(value))
                for each, value in zip(labels, family.values, strict=True)
            ),
        )
    )
    values = [r.value for r in query(store.engine, SLOTS, run="mixed")]
    assert values == family.values.tolist() + window("mixed", 2).families[0].values.tolist()
    found = samples(store.engine, "mixed", [SLOTS], T0, T0 + timedelta(seconds=5))
    assert len(found) == len(labels)
    first = next(s for s in found if s.labels == labels[0])
    assert first.points == [(T0.timestamp() + 1, 1000.0), (T0.timestamp() + 2, 2000.0)]
