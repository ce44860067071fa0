"""cli_catalog commands (to be filled)."""

from starter.cli_app import app  # noqa: F401
