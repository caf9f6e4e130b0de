"""`docs/metrics.md`, rendered from the metric catalogue."""

from __future__ import annotations

from observe.catalogue import (
    CATALOGUE,
    COMMON_LABELS,
    DISTRIBUTED_LABELS,
    DROPPED_SAMPLES,
    MAX_IDENTIFIER_CHARS,
    UNSTORABLE_LABEL,
    Kind,
)


def render_metrics_doc() -> str:
    common = ", ".join(f"`{label}`" for label in COMMON_LABELS)
    distributed = " and ".join(f"`{label}`" for label in DISTRIBUTED_LABELS)
    lines = [
        "# Metrics",
        "",
        "Generated from `observe/catalogue.py` by `make generate`; do not edit by hand.",
        "",
        f"Every series carries the labels {common}, and "
        f"{distributed} in distributed runs. Names are as Prometheus shows them; the store "
        "keeps the catalogue name (without unit or `_total` suffix).",
        "",
        "Label values are kept verbatim, whatever they hold (quotes, newlines, SQL, any "
        "Unicode) and however long, by `/metrics`, Prometheus and the store; `observe query "
        "--json` prints them back exactly, and tables show hidden characters as escapes. "
        f"Run ids and model names may have up to {MAX_IDENTIFIER_CHARS} characters. Text "
        "the store cannot keep, NUL or a lone surrogate, is refused with an error where "
        "observe takes it (a run id, a model name, a module name); a point of your own "
        "instrument whose attributes hold it is left out of the store and counted in "
        f'`{DROPPED_SAMPLES.prometheus_name}{{reason="{UNSTORABLE_LABEL}"}}`.',
        "",
        "| Prometheus name | kind | unit | labels | description |",
        "|---|---|---|---|---|",
    ]
    for metric in CATALOGUE:
        labels = ", ".join(f"`{label}`" for label in metric.labels) or "-"
        name = f"`{metric.prometheus_name}`"
        if metric.kind is Kind.HISTOGRAM:
            name += " (`_bucket`, `_sum`, `_count`)"
        description = metric.description
        if metric.buckets:
            description += f" Buckets: {', '.join(f'{b:g}' for b in metric.buckets)}."
        lines.append(f"| {name} | {metric.kind} | `{metric.unit}` | {labels} | {description} |")
    return "\n".join(lines) + "\n"
