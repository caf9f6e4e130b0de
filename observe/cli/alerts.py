"""`observe alerts`: the alert rules in effect, their state now and history, their promtool
tests, and their files."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from observe.cli.app import (
    DbUrl,
    JsonFlag,
    app,
    console,
    explains_errors,
    settings,
    shown,
    store_engine,
)
from observe.errors import ObserveError

if TYPE_CHECKING:
    from observe.alerts.evaluate import AlertRow

alerts = typer.Typer(
    help="Alert rules: list them, show their state and history, check for critical ones "
    "firing, test them with promtool, write their files."
)
app.add_typer(alerts, name="alerts", no_args_is_help=True)

SEVERITY_COLOURS = {"critical": "bold red", "warning": "yellow", "info": "blue"}
STATE_COLOURS = {"firing": "bold red", "pending": "yellow", "ok": "green"}

PrometheusUrl = Annotated[
    str | None,
    typer.Option(
        "--prometheus",
        help="Ask this Prometheus (e.g. http://127.0.0.1:9090) instead of evaluating the "
        "rules on the store.",
    ),
]
RunOption = Annotated[
    str | None, typer.Option("--run", help="Run id (`observe runs`); default: the latest.")
]


@alerts.command("list")
@explains_errors
def list_rules(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every rule with its expression, bounds, `for` and severity, as configured."""
    rules = settings(ctx).alerts.alert_rules()
    if as_json:
        console.print_json(json.dumps([rule.as_dict() for rule in rules]))
        return
    # A block per rule, not a table: expressions run to hundreds of characters.
    for rule in rules:
        console.print(
            f"[bold]{rule.name}[/] [{SEVERITY_COLOURS[rule.severity]}]{rule.severity}[/], for "
            f"{rule.for_}: {escape(rule.signal.describe())} {rule.bound}",
            highlight=False,
        )
        console.print(Padding(Text(rule.expr, style="dim"), (0, 0, 0, 2), expand=False))


@alerts.command("test")
@explains_errors
def test_rules(ctx: typer.Context) -> None:
    """Run `promtool check rules` and `promtool test rules` on the rules as configured, with
    tests made from their bounds; exit 1 when one fails."""
    from observe.alerts.files import write_alert_files
    from observe.alerts.promtool import check_and_test, promtool

    config = settings(ctx).alerts
    promtool()  # missing promtool is an error before any file is written
    with tempfile.TemporaryDirectory(prefix="observe-alerts-") as directory:
        write_alert_files(config, Path(directory))
        passed, output = check_and_test(Path(directory))
    console.print(output.rstrip(), highlight=False, markup=False)
    if not passed:
        raise typer.Exit(1)
    console.print(f"{len(config.alert_rules())} rules checked and tested", highlight=False)


@alerts.command("write")
@explains_errors
def write(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Directory to write the files into.")],
) -> None:
    """Write the rule file, its promtool tests, the Grafana provisioning file and the runbook
    for the rules as configured (`make generate` writes alerts/ for the defaults)."""
    from observe.alerts.files import write_alert_files

    try:
        written = write_alert_files(settings(ctx).alerts, out)
    except OSError as exc:
        raise ObserveError(
            f"cannot write into {out} ({exc.strerror}): pick a writable directory"
        ) from exc
    for path in written:
        console.print(f"wrote {path}", highlight=False)


def _rows(
    ctx: typer.Context, prometheus: str | None, run: str | None, db_url: str | None
) -> list[AlertRow]:
    rules = settings(ctx).alerts.alert_rules()
    if prometheus is not None:
        from observe.alerts.prometheus_api import prometheus_rows

        if run is not None:
            raise ObserveError(
                "--run reads the store, and --prometheus asks Prometheus: pass one of them "
                "(select runs in Prometheus with [alerts] run)"
            )
        return prometheus_rows(prometheus, rules)
    from observe.alerts.evaluate import status_rows

    engine = store_engine(ctx, db_url)
    try:
        return status_rows(engine, rules, run)
    finally:
        engine.dispose()


def _labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def alert_table(rows: Sequence[AlertRow]) -> Table:
    """Alert states as a table, coloured by severity and state."""
    table = Table("rule", "severity", "state", "value", "since", "series")
    table.columns[0].no_wrap = True
    for row in rows:
        table.add_row(
            row.rule,
            f"[{SEVERITY_COLOURS[row.severity]}]{row.severity}[/]",
            f"[{STATE_COLOURS.get(row.state, 'dim')}]{row.state}[/]",
            "" if row.value is None else f"{row.value:.4g}",
            row.since.isoformat(timespec="seconds") if row.since else "",
            shown(_labels(row.labels)),
        )
    return table


@alerts.command("status")
@explains_errors
def status(
    ctx: typer.Context,
    prometheus: PrometheusUrl = None,
    run: RunOption = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Every rule's state now (ok, pending, firing), its value and since when: from
    Prometheus, or evaluated on a run in the store (as of its end once it has ended)."""
    rows = _rows(ctx, prometheus, run, db_url)
    if as_json:
        console.print_json(json.dumps([row.as_dict() for row in rows]))
        return
    console.print(alert_table(rows))


@alerts.command("history")
@explains_errors
def history(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="How far back: 30s, 10m, 2h, 1d.")] = "24h",
    run: Annotated[str | None, typer.Option("--run", help="Only this run's alerts.")] = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """When alerts fired and resolved, as monitored runs' evaluators recorded it."""
    from datetime import UTC, datetime

    from observe.store.alerting import alert_events
    from observe.store.queries import find_run, parse_since

    start = datetime.now(UTC) - parse_since(since)
    engine = store_engine(ctx, db_url)
    try:
        if run is not None:
            find_run(engine, run)
        events = alert_events(engine, run_id=run, since=start)
    finally:
        engine.dispose()
    if as_json:
        console.print_json(json.dumps([event.as_dict() for event in events]))
        return
    table = Table("time", "alert", "severity", "state", "run", "series", "summary")
    for e in events:
        table.add_row(
            e.time.isoformat(timespec="seconds"),
            e.alert,
            f"[{SEVERITY_COLOURS.get(e.severity, '')}]{e.severity}[/]",
            f"[{STATE_COLOURS.get(e.state, 'dim')}]{e.state}[/]",
            shown(e.run_id or ""),
            shown(_labels(e.labels)),
            shown(e.annotations.get("summary", "")),
        )
    console.print(table)


@alerts.command("check")
@explains_errors
def check(
    ctx: typer.Context,
    prometheus: PrometheusUrl = None,
    run: RunOption = None,
    db_url: DbUrl = None,
) -> None:
    """Exit 1 when a critical rule fires, printing those that do; 0 otherwise. For cron
    and CI."""
    firing = [
        row
        for row in _rows(ctx, prometheus, run, db_url)
        if row.state == "firing" and row.severity == "critical"
    ]
    for row in firing:
        value = "" if row.value is None else f" value {row.value:.4g}"
        console.print(Text(f"{row.rule} firing{value} ") + shown(_labels(row.labels)))
    if firing:
        raise typer.Exit(1)
    console.print("no critical alert firing", highlight=False)
