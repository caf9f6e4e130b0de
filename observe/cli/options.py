"""Command options built from config dataclasses, so that each setting is written once.

A field's name gives the option (`batch_size` → `--batch-size`), its type the parsing, its
default the default and its `metadata["help"]` the help text; the command receives the
dataclass, checked by its own `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Collection
from typing import Annotated, Any, TypeVar

import typer

R = TypeVar("R")


def config_options(
    parameter: str, default: Any, *, only: Collection[str] | None = None
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Replaces the command's `parameter` by an option per field of `default`'s dataclass
    (those named in `only`); the command gets `default` with the given options replaced."""
    hints = typing.get_type_hints(type(default))
    fields = [f for f in dataclasses.fields(default) if only is None or f.name in only]
    unknown = set(only or ()) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"{type(default).__name__} has no fields {sorted(unknown)}")
    options = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=getattr(default, f.name),
            annotation=Annotated[hints[f.name], typer.Option(help=f.metadata.get("help"))],
        )
        for f in fields
    ]

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        signature = inspect.signature(command, eval_str=True)
        if parameter not in signature.parameters:
            raise ValueError(f"{command.__name__} has no parameter {parameter!r}")
        kept = [p for p in signature.parameters.values() if p.name != parameter]
        clash = {p.name for p in kept} & {o.name for o in options}
        if clash:
            raise ValueError(f"{command.__name__} has options {sorted(clash)} twice")

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> R:
            given = {f.name: kwargs.pop(f.name) for f in fields}
            kwargs[parameter] = dataclasses.replace(default, **given)
            return command(*args, **kwargs)

        positional = [p for p in kept if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p for p in kept if p.kind is inspect.Parameter.KEYWORD_ONLY]
        parameters = [*positional, *options, *keyword]
        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate
