"""How a dashboard is put together: titled rows of panels, stable ids, and its JSON."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

# Every observe dashboard carries it; each links to the others through it.
TAG = "observe"

PanelBuilder = cogbuilder.Builder[model.Panel]
# A row's title and its panels, left to right; their widths (`.span(w)`, 24 to a line)
# wrap them onto lines as Grafana's grid does.
Row = tuple[str, Sequence[PanelBuilder]]


def assemble(
    uid: str,
    title: str,
    description: str,
    variables: Sequence[cogbuilder.Builder[model.VariableModel]],
    rows: Sequence[Row],
) -> model.Dashboard:
    builder = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .time("now-1h", "now")
        .refresh("30s")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .variables(list(variables))
        .link(
            db.DashboardLink("observe")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    # The SDK places each panel after the one before and wraps at 24 columns.
    for row_title, panels in rows:
        builder = builder.with_row(db.Row(row_title))
        for panel in panels:
            builder = builder.with_panel(panel)
    dashboard = builder.build()
    # Ids in reading order: the same every time the dashboard is generated, so links to a
    # panel (`viewPanel=`) survive regeneration.
    for number, placed in enumerate(dashboard.panels or [], start=1):
        placed.id_val = number
    return dashboard


def render(dashboard: model.Dashboard) -> str:
    """The JSON Grafana provisions: the dashboard model itself, keys sorted."""
    return JSONEncoder(sort_keys=True, indent=2).encode(dashboard) + "\n"
