"""What every observe dashboard is built from: datasources, variables, queries, panels.

Series names, label names, units and thresholds all come from `observe.catalogue`; the
template variables are named after the labels they select (`$model`, `$run`, `$layer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    DataSourceRef,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from observe import catalogue
from observe.catalogue import Metric
from observe.dashboards.sql import POSTGRES_TYPE, SQL, SQLFormat
from observe.grafana_ids import PROMETHEUS_UID, STORE_UID

# Grafana widens it to cover at least four scrape intervals, so a rate never comes out
# empty at a short dashboard interval.
RATE_INTERVAL = "$__rate_interval"

# The label names, as the catalogue defines them.
RUN, MODEL = catalogue.RUN_LABEL, catalogue.MODEL_LABEL
LAYER, EXPERT, SLOT, METHOD = (
    catalogue.LAYER,
    catalogue.EXPERT,
    catalogue.SLOT_LE,
    catalogue.METHOD,
)
# Labels whose values are bare numbers: a legend names them ("layer 3").
_NUMBERED = (LAYER, EXPERT)

Target = prometheus.Dataquery | SQL


@dataclass(frozen=True)
class Datasource:
    """A datasource the dashboards read, with the uid and name provisioning gives it."""

    type: str
    uid: str
    name: str

    @property
    def ref(self) -> DataSourceRef:
        """For panels and targets: the dashboard's `$datasource`, which defaults to this."""
        return DataSourceRef(type_val=self.type, uid="${datasource}")


PROMETHEUS = Datasource("prometheus", PROMETHEUS_UID, "Prometheus (observe)")
STORE = Datasource(POSTGRES_TYPE, STORE_UID, "observe store (PostgreSQL)")


def datasource_variable(source: Datasource) -> db.DatasourceVariable:
    return (
        db.DatasourceVariable("datasource")
        .label("Datasource")
        .type(source.type)
        .current(model.VariableOption(selected=True, text=source.name, value=source.uid))
    )


def prometheus_variables() -> list[cogbuilder.Builder[model.VariableModel]]:
    """`$datasource`, then `$model`, `$run` and `$layer`, each narrowing the next; a
    run counts as monitored once it marks a step, so its step counter lists it."""
    steps = catalogue.MONITOR_STEPS.prometheus_name
    by_layer = catalogue.ROUTING_ENTROPY.prometheus_name
    return [
        datasource_variable(PROMETHEUS),
        _label_values(MODEL, f"label_values({steps}, {MODEL})"),
        _label_values(RUN, f'label_values({steps}{{{MODEL}=~"${MODEL}"}}, {RUN})'),
        _label_values(
            LAYER,
            f'label_values({by_layer}{{{MODEL}=~"${MODEL}", {RUN}=~"${RUN}"}}, {LAYER})',
            sort=model.VariableSort.NUMERICAL_ASC,
        ),
    ]


def _label_values(
    label: str, query: str, sort: model.VariableSort = model.VariableSort.ALPHABETICAL_ASC
) -> db.QueryVariable:
    # `All` is `.*` rather than a list of every value: queries stay short however many
    # runs Prometheus holds.
    return _multi_value(label, PROMETHEUS, query).sort(sort).all_value(".*")


def sql_variable(name: str, query: str) -> db.QueryVariable:
    """A variable listing what `query` returns; SQL panels use it as `IN ($name)`."""
    # Multi-value: Grafana then quotes every value it substitutes into SQL.
    return _multi_value(name, STORE, query)


def _multi_value(name: str, source: Datasource, query: str) -> db.QueryVariable:
    """A variable of `source`'s values for `query`, several at once, all by default."""
    return (
        db.QueryVariable(name)
        .label(name.capitalize())
        .datasource(source.ref)
        .query(query)
        .definition(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


def selector(metric: Metric, suffix: str = "", matching: Mapping[str, str] | None = None) -> str:
    """`metric`'s series for the chosen model and run, and layer where it has one; those
    whose labels also match `matching`'s regular expressions, by label name."""
    labels = [MODEL, RUN, *(label for label in (LAYER,) if label in metric.labels)]
    patterns = {**{label: f"${label}" for label in labels}, **(matching or {})}
    unknown = patterns.keys() - set(metric.all_labels)
    if unknown:
        raise ValueError(
            f"{metric.name} has no label {sorted(unknown)}: filter on its own, "
            f"{', '.join(metric.all_labels)}"
        )
    matchers = ", ".join(f'{label}=~"{pattern}"' for label, pattern in patterns.items())
    return f"{metric.prometheus_name}{suffix}{{{matchers}}}"


def rate(metric: Metric, suffix: str = "", matching: Mapping[str, str] | None = None) -> str:
    return f"rate({selector(metric, suffix, matching)}[{RATE_INTERVAL}])"


def legend(*labels: str, prefix: str = "") -> str:
    """A legend template showing each label's value, numbered ones after their name."""
    parts = [
        f"{label} {{{{{label}}}}}" if label in _NUMBERED else f"{{{{{label}}}}}" for label in labels
    ]
    return " ".join([prefix, *parts] if prefix else parts)


def promql(expr: str, legend_format: str = "", *, table: bool = False) -> prometheus.Dataquery:
    """A Prometheus target; `table`: one instant query, its series as a table's rows."""
    query = prometheus.Dataquery().expr(expr).datasource(PROMETHEUS.ref)
    if legend_format:
        query = query.legend_format(legend_format)
    if table:
        query = query.instant().format(PromQueryFormat.TABLE)
    return query


def sql(raw_sql: str, format_val: SQLFormat = SQLFormat.TABLE) -> SQL:
    return SQL(raw_sql).format(format_val).datasource(STORE.ref)


def _ref_ids(targets: Sequence[Target]) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    """The targets, their `refId`s A, B, C… in order."""
    return [target.ref_id(chr(ord("A") + i)) for i, target in enumerate(targets)]


def timeseries_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str,
    source: Datasource = PROMETHEUS,
) -> timeseries.Panel:
    # The SDK's defaults hide the legend and show one series in the tooltip; panels here
    # hold a series per run and layer.
    shown = VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST)
    tooltip = VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
    panel = timeseries.Panel().title(title).description(description).unit(unit)
    panel = panel.legend(shown.placement(LegendPlacement.BOTTOM)).tooltip(tooltip)
    return panel.datasource(source.ref).targets(_ref_ids(targets))


def stat_panel(
    title: str, description: str, targets: Sequence[Target], *, unit: str | None
) -> stat.Panel:
    # The last value, as on-call wants it now; the SDK's default lists no calculation.
    last = ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    panel = stat.Panel().title(title).description(description).reduce_options(last)
    panel = panel.datasource(PROMETHEUS.ref).targets(_ref_ids(targets))
    return panel.unit(unit) if unit else panel


def table_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str | None,
    source: Datasource = PROMETHEUS,
) -> table.Panel:
    panel = table.Panel().title(title).description(description)
    panel = panel.datasource(source.ref).targets(_ref_ids(targets))
    return panel.unit(unit) if unit else panel


def heatmap_panel(
    title: str, description: str, targets: Sequence[Target], *, unit: str
) -> heatmap.Panel:
    """Each series a row, over time: the values are already the cells, not samples for
    Grafana to bucket."""
    panel = heatmap.Panel().title(title).description(description).unit(unit).calculate(False)
    return panel.datasource(PROMETHEUS.ref).targets(_ref_ids(targets))


def line(panel: timeseries.Panel, value: float) -> timeseries.Panel:
    """A dashed red line at `value`, an alert threshold."""
    steps = [model.Threshold(value=None, color="transparent"), model.Threshold(value, "red")]
    return _thresholds(panel, steps, GraphThresholdsStyleMode.DASHED)


def band(panel: timeseries.Panel, low_high: tuple[float, float]) -> timeseries.Panel:
    """The range [low, high] shaded green and what lies outside it red."""
    low, high = low_high
    steps = [
        model.Threshold(value=None, color="red"),
        model.Threshold(low, "green"),
        model.Threshold(high, "red"),
    ]
    return _thresholds(panel, steps, GraphThresholdsStyleMode.DASHED_AND_AREA)


def _thresholds(
    panel: timeseries.Panel, steps: list[model.Threshold], style: GraphThresholdsStyleMode
) -> timeseries.Panel:
    thresholds = db.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps)
    return panel.thresholds(thresholds).thresholds_style(GraphThresholdsStyleConfig().mode(style))
