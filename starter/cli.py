"""`cairn` entry point.

Temporal's Python runtime can abort while the interpreter finalizes (exit code 134), which would
hide the command's real status; so the process leaves with `os._exit` once output is flushed.
"""

from __future__ import annotations

import os
import sys

import click

from starter.cli_app import app

# Each module registers its commands on `app`; heavy imports stay inside the command functions.
from starter import cli_journeys, cli_runtime, cli_simulate, cli_tasks  # noqa: E402,F401


def main() -> None:
    code = 0
    try:
        result = app(standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click.exceptions.Exit as done:
        code = done.exit_code
    except click.exceptions.Abort:
        print("Aborted.", file=sys.stderr)
        code = 130
    except click.ClickException as error:
        error.show()
        code = error.exit_code
    except KeyboardInterrupt:
        code = 130
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
