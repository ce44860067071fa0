"""The `cairn` command: one module per group of sub-commands, registered on `starter.cli.app`."""
