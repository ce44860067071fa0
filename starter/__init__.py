"""The doors: the HTTP API (`api/`), the `cairn` command (`cli/`), the processes (`dev`, `worker`),
the Temporal connection, schedules, the Python client and the testing helper.

Everything here is thin: it parses what comes in, calls the core (`cairn`) and assembles the
workflows and activities into workers. Nothing below imports it.
"""
