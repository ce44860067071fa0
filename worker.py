"""`python worker.py`: the same as `cairn worker` (journey and delivery workers, until Ctrl-C).

Settings come from `CAIRN_*` environment variables or `.env`, as for every Cairn process.
"""

from __future__ import annotations

import sys

from starter.cli.main import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", *sys.argv[1:]]
    main()
