"""The Typer application every `cairn` sub-command module registers itself on."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption


def _flags_unlabelled(params: list[Any]) -> list[Any]:
    """Flags take no value, so their help shows no type.

    Typer labels every option with its type, and a flag (`--help` included) with `<bool>`, which
    reads as if it wanted a value.
    """
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_unlabelled(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_unlabelled(super().get_params(ctx))


class _Cairn(typer.Typer):
    """Typer, with every command's help made by `_Command`."""

    def command(self, name: str | None = None, *, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(name, cls=cls or _Command, **kwargs)


app = _Cairn(
    name="cairn",
    help="Cairn: customer journeys as code, run durably on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Group,
)


@app.command()
def version() -> None:
    """Print Cairn's version."""
    from cairn import __version__

    typer.echo(__version__)


@app.callback()
def _root() -> None:
    """Cairn: customer journeys as code, run durably on Temporal."""
    from cairn.log import configure

    # Until a command reads its settings, logs go to stderr and only warnings show: stdout is
    # the command's output (a graph, a report) and must stay pipeable.
    configure("WARNING")
