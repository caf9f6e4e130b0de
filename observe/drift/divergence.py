"""Routing drift: how far a window's expert load is from the baseline's, in [0, 1].

Shapes: E experts of one MoE layer.
"""

from __future__ import annotations

import numpy as np

from observe.errors import ObserveError


def js_divergence(counts_E: np.ndarray, baseline_E: np.ndarray) -> float:
    """Jensen–Shannon divergence, log base 2, between two expert loads.

    Either argument may be token counts or probabilities: each is divided by its sum. The
    result is 0 for the same load, 1 when no expert that one uses is used by the other, and
    symmetric. An expert at zero in either load contributes nothing undefined (0·log 0 = 0).

    When either load is all zero (a window in which the layer routed no tokens) there is
    nothing to compare and the result is 0: an idle window is no evidence of drift.
    """
    p_E = _load(counts_E, "window's expert counts")
    q_E = _load(baseline_E, "baseline's expert counts")
    if p_E.shape != q_E.shape:
        raise ObserveError(
            f"the window counts {p_E.shape[0]} experts and the baseline {q_E.shape[0]}: "
            "compare loads of the same layer of the same model"
        )
    p_total, q_total = p_E.sum(), q_E.sum()
    if p_total == 0 or q_total == 0:
        return 0.0
    p_E, q_E = p_E / p_total, q_E / q_total
    m_E = (p_E + q_E) / 2
    divergence = (_kl_to(p_E, m_E) + _kl_to(q_E, m_E)) / 2
    # Rounding can leave identical loads a hair below 0, or disjoint ones above 1.
    return float(min(max(divergence, 0.0), 1.0))


def _load(values_E: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values_E, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ObserveError(f"the {what} must be a non-empty 1-D array, got shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ObserveError(
            f"the {what} hold a negative, NaN or inf value: pass token counts or probabilities"
        )
    return values


def _kl_to(p_E: np.ndarray, m_E: np.ndarray) -> float:
    """KL(p ‖ m) in bits; m is positive wherever p is, being its average with another."""
    used = p_E > 0
    return float(np.sum(p_E[used] * np.log2(p_E[used] / m_E[used])))
