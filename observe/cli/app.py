"""The `observe` Typer app, its error handling and the settings every command shares."""

from __future__ import annotations

import functools
import logging
import signal
import unicodedata
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from observe.catalogue import MAX_IDENTIFIER_CHARS
from observe.errors import ObserveError
from observe.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(
    help="Observability and drift monitoring for Mixture-of-Experts language models.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

# Options of every command that reaches the store or serves metrics.
DbUrl = Annotated[
    str | None,
    typer.Option(
        help="Store URL (SQLAlchemy); default SQLite under .observe/. Env OBSERVE_DB_URL."
    ),
]
PrometheusPort = Annotated[
    int | None,
    typer.Option(
        help="Port of the /metrics endpoint; 0 picks a free one. Env OBSERVE_PROMETHEUS_PORT."
    ),
]
OtlpEndpoint = Annotated[
    str | None,
    typer.Option(
        help="OTLP/HTTP endpoint of an OpenTelemetry Collector. Env OBSERVE_OTLP_ENDPOINT."
    ),
]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


# Characters a terminal would act on or not show: controls (a newline, an escape sequence),
# format characters (zero-width, right-to-left override), separators and surrogates.
_HIDDEN = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))


def shown(value: str) -> Text:
    """A value a user gave (a run id, a model, a label) as a table shows it: never markup,
    hidden characters as escapes, one longer than an identifier may be cut short; `--json`
    prints values as they are."""
    cut = value[:MAX_IDENTIFIER_CHARS]
    text = "".join(
        char.encode("unicode_escape").decode() if unicodedata.category(char) in _HIDDEN else char
        for char in cut
    )
    if len(cut) < len(value):
        text += f"… ({len(value):,} characters)"
    return Text(text)


def explains_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Shows an ObserveError as one line and exit status 2, instead of a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ObserveError as exc:
            # Text, not markup: messages name settings tables such as [monitor], and quote
            # what the user gave, which Rich would otherwise take for markup.
            message = Text.assemble(("error:", "bold red"), " ", str(exc))
            errors.print(message, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc

    return run


@app.callback()
def configure(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Settings file (TOML); default observe.toml if present."),
    ] = None,
) -> None:
    ctx.obj = config


def settings(ctx: typer.Context, **flags: object) -> Settings:
    """The file from `observe --config`, the environment, then these flags."""
    config_file = ctx.find_root().obj
    return load_settings(config_file, overrides=flags)


def store_url(ctx: typer.Context, db_url: str | None) -> str:
    """The store URL these settings name (SQLite under .observe/ by default)."""
    from observe.store.engine import resolve_url

    return resolve_url(settings(ctx, db_url=db_url).db_url)


def store_engine(ctx: typer.Context, db_url: str | None) -> Engine:
    """A checked connection to the store these settings name."""
    from observe.store.engine import connect

    return connect(store_url(ctx, db_url))


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwinds like Ctrl-C: sessions close on the way out, delivering within their limit.
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    # observe's one-line notices (what attach found, the /metrics address) go to stderr.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("observe")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    app(prog_name="observe")
