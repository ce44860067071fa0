"""`cairn` entry point.

Temporal's Python runtime can abort while the interpreter finalizes (exit code 134), which would
hide the command's real status; so the process leaves with `os._exit` once output is flushed.
"""

from __future__ import annotations

import os
import sys

# Each module registers its commands on `app`; heavy imports stay inside the command functions.
from starter.cli import (  # noqa: F401
    catalog,
    data_keys,
    entries,
    imports,
    journeys,
    keys,
    quarantine,
    rejected,
    report,
    runtime,
    simulate,
    tasks,
)
from starter.cli.app import app


def main() -> None:
    code: int = 0
    try:
        app()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
