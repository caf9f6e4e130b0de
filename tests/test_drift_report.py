"""The live scores equal Evidently's Report on the same data; the HTML report renders.

Each Report runs t-SNE for its picture, so the data stay small: 120 rows of 8 dims a side.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from evidently import DataDefinition, Dataset, Report
from evidently.metrics.embeddings import (
    DistanceDriftMethod,
    EmbeddingsDrift,
    MMDDriftMethod,
    ModelDriftMethod,
    RatioDriftMethod,
)

from observe.drift.methods import raw_score
from observe.drift.projection import Projection
from observe.drift.report import report_html

# Evidently's own defaults, spelled out: what `raw_score` promises to match.
REPORT_METHODS = {
    "classifier": ModelDriftMethod(bootstrap=None, pca_components=None),
    "mmd": MMDDriftMethod(bootstrap=None, pca_components=None),
    "distance": DistanceDriftMethod(dist="euclidean", bootstrap=None, pca_components=None),
    "ratio": RatioDriftMethod(
        component_stattest="wasserstein", component_stattest_threshold=0.1, pca_components=None
    ),
}


@pytest.fixture(scope="module")
def windows() -> tuple[np.ndarray, np.ndarray]:
    """A baseline and a window shifted by half a standard deviation, projected."""
    rng = np.random.default_rng(11)
    projection = Projection.fit(rng.normal(size=(400, 16)), max_dims=8)
    reference = projection.apply(rng.normal(size=(120, 16)))
    current = projection.apply(rng.normal(size=(120, 16)) + 0.5)
    return current, reference


@pytest.mark.parametrize("method", sorted(REPORT_METHODS))
def test_the_live_score_is_what_evidently_reports(
    windows: tuple[np.ndarray, np.ndarray], method: str
) -> None:
    current, reference = windows
    columns = [f"dim{k}" for k in range(current.shape[1])]
    definition = DataDefinition(embeddings={"states": columns})
    snapshot = Report(
        [EmbeddingsDrift(embeddings_name="states", drift_method=REPORT_METHODS[method])]
    ).run(
        Dataset.from_pandas(_frame(current, columns), data_definition=definition),
        Dataset.from_pandas(_frame(reference, columns), data_definition=definition),
    )
    (result,) = snapshot.metric_results.values()
    reported = float(result.value)
    assert reported > 0  # a shifted window: a score of 0 would agree by accident
    assert raw_score(method, current, reference) == pytest.approx(reported, rel=0, abs=1e-9)


def test_the_html_report_shows_the_method_and_the_calibrated_verdict(
    windows: tuple[np.ndarray, np.ndarray],
) -> None:
    current, reference = windows
    auc = raw_score("classifier", current, reference)
    drifted = report_html(current, reference, "classifier", threshold=0.0)
    assert drifted.lstrip().startswith("<!DOCTYPE html>")
    assert "Drift in embeddings 'pooled hidden states'" in drifted
    assert (
        f"Data drift detected. Drift detection method: model. Drift score: {round(auc, 3)}"
        in drifted
    )
    quiet = report_html(current, reference, "classifier", threshold=1.0)
    assert "Data drift not detected" in quiet


def _frame(rows: np.ndarray, columns: list[str]) -> pd.DataFrame:
    # The live path hands Evidently float64 copies of the float32 projections; so does this.
    return pd.DataFrame(rows.astype(np.float64), columns=columns)
