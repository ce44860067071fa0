"""`python -m starter.cli`: the same as the `cairn` command."""

from starter.cli.main import main

main()
