"""Grafana's unit for each UCUM unit the catalogue uses: the one place the two meet."""

from __future__ import annotations

# Grafana unit ids for UCUM units other than "1" and annotations.
_GRAFANA_UNITS = {"s": "s"}


def grafana_unit(ucum: str, *, fraction: bool = False) -> str:
    """The Grafana unit of a value measured in `ucum` (a `Metric.unit`).

    `fraction`: a dimensionless value that is part of a whole (a share, a miss rate, a
    probability), shown as a percentage; other dimensionless values (scores, losses,
    ratios like load imbalance) stay plain numbers, so thresholds read as written.
    Annotations (`{token}`, `{token}/s`, `{request}`) are counts, and rates of counts, of
    things: Grafana's `short` shows them with k and M.
    """
    if ucum == "1":
        return "percentunit" if fraction else "none"
    if fraction:
        raise ValueError(f"a fraction is dimensionless (UCUM '1'), not {ucum!r}")
    if ucum.startswith("{"):
        return "short"
    if ucum in _GRAFANA_UNITS:
        return _GRAFANA_UNITS[ucum]
    raise ValueError(f"no Grafana unit for UCUM {ucum!r}: add it to observe/dashboards/units.py")
