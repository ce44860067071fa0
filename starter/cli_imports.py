"""`cairn import`: contacts and journey entries from a CSV file (to be filled)."""

from starter.cli_app import app  # noqa: F401
