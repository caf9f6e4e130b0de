"""`observe alerts`: the alert rules in effect, their promtool tests, and their files."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.padding import Padding
from rich.text import Text

from observe.cli.app import JsonFlag, app, console, explains_errors, settings

alerts = typer.Typer(help="Alert rules: list them, test them with promtool, write their files.")
app.add_typer(alerts, name="alerts", no_args_is_help=True)


@alerts.command("list")
@explains_errors
def list_rules(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every rule with its expression, bounds, `for` and severity, as configured."""
    rules = settings(ctx).alerts.alert_rules()
    if as_json:
        console.print_json(json.dumps([rule.as_dict() for rule in rules]))
        return
    # A block per rule, not a table: expressions run to hundreds of characters.
    colours = {"critical": "bold red", "warning": "yellow", "info": "blue"}
    for rule in rules:
        console.print(
            f"[bold]{rule.name}[/] [{colours[rule.severity]}]{rule.severity}[/], for "
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
    from observe.errors import ObserveError

    try:
        written = write_alert_files(settings(ctx).alerts, out)
    except OSError as exc:
        raise ObserveError(
            f"cannot write into {out} ({exc.strerror}): pick a writable directory"
        ) from exc
    for path in written:
        console.print(f"wrote {path}", highlight=False)
