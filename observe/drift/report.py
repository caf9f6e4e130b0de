"""Evidently's HTML report of one window against the baseline, for a person to read.

Shapes: N rows in the current window, M in the projected baseline, K dimensions.

The report shows the score the live path computes (the same method on the same paired
rows) next to Evidently's t-SNE picture of both windows. The picture is why this is not the
live path: t-SNE costs seconds at a few hundred rows and tens of seconds at thousands.
"""

from __future__ import annotations

import numpy as np
from evidently import DataDefinition, Dataset, Report
from evidently.metrics.embeddings import EmbeddingsDrift

from observe.drift.config import DEFAULT_METHOD
from observe.drift.methods import evidently_method, paired_frames

EMBEDDINGS = "pooled hidden states"


def report_html(
    current_NK: np.ndarray,
    reference_MK: np.ndarray,
    method: str = DEFAULT_METHOD,
    *,
    threshold: float | None = None,
    seed: int = 0,
) -> str:
    """A standalone HTML document of Evidently's embeddings-drift report.

    Pass the calibrated `threshold` so that the report's "drift detected" agrees with the
    live verdict; without it Evidently's default threshold decides, which does not transfer
    between data sets (see `observe.drift.calibration`).
    """
    current, reference = paired_frames(method, current_NK, reference_MK, seed=seed)
    definition = DataDefinition(embeddings={EMBEDDINGS: list(current.columns)})
    report = Report(
        [
            EmbeddingsDrift(
                embeddings_name=EMBEDDINGS, drift_method=evidently_method(method, threshold)
            )
        ]
    )
    snapshot = report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    html: str = snapshot.get_html_str(as_iframe=False)
    return html
