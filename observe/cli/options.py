"""Command options built from config dataclasses, so that each setting is written once.

A field's name gives the option (`batch_size` → `--batch-size`), its type the parsing, its
default the default and its `metadata["help"]` the help text; the command receives the
dataclass, checked by its own `__post_init__`. A `tuple[X, ...]` field is an option given
once per item.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Collection
from types import GenericAlias
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
    repeated = {f.name for f in fields if _is_variadic_tuple(hints[f.name])}
    options = [_option(f, getattr(default, f.name), hints[f.name]) for f in fields]

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
            given |= {name: tuple(given[name]) for name in repeated}
            kwargs[parameter] = dataclasses.replace(default, **given)
            return command(*args, **kwargs)

        positional = [p for p in kept if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p for p in kept if p.kind is inspect.Parameter.KEYWORD_ONLY]
        parameters = [*positional, *options, *keyword]
        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def _option(field: dataclasses.Field[Any], default: Any, hint: Any) -> inspect.Parameter:
    if _is_variadic_tuple(hint):
        # Typer parses tuples only of a fixed length: the option is given once per item.
        hint, default = GenericAlias(list, typing.get_args(hint)[0]), list(default)
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[hint, typer.Option(help=field.metadata.get("help"))],
    )


def _is_variadic_tuple(hint: Any) -> bool:
    args = typing.get_args(hint)
    return typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis
