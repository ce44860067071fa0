"""The Typer application every `cairn` sub-command module registers itself on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="cairn",
    help="Cairn: customer journeys as code, run durably on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print Cairn's version."""
    from cairn import __version__

    typer.echo(__version__)


@app.callback()
def _root() -> None:
    """Cairn: customer journeys as code, run durably on Temporal."""
