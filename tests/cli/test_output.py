"""The `cairn` command as a door: stdout carries only a command's output, tables keep their
rows whole when piped, and help reads cleanly.

Commands that touch the store run as real processes (stdout and stderr apart, no terminal), the
way a script or a redirect sees them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import starter.cli.main  # noqa: F401  (registers every command on the app)
from starter.cli.app import app
from starter.dev import free_port

REPO = Path(__file__).resolve().parents[2]


def cairn(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "starter.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_logs_go_to_stderr_never_to_stdout(tmp_path: Path) -> None:
    done = cairn("tasks", cwd=tmp_path, CAIRN_HOME=str(tmp_path / ".cairn"),
                 CAIRN_LOG_LEVEL="DEBUG")
    assert done.returncode == 0, done.stderr
    assert "store.migrated" in done.stderr  # opening a new store migrates it, and says so
    assert "store.migrated" not in done.stdout
    assert done.stdout.lstrip().startswith("tasks (open)"), done.stdout


def test_tables_keep_whole_rows_when_piped(tmp_path: Path) -> None:
    folder = tmp_path / ("a-folder-with-a-long-name-" * 4) / "journeys"
    folder.mkdir(parents=True)
    shutil.copy(REPO / "journeys" / "cart-abandonment.yaml", folder)
    shutil.copytree(REPO / "journeys" / "templates", folder / "templates")
    done = cairn("publish", str(folder), cwd=tmp_path, CAIRN_HOME=str(tmp_path / ".cairn"),
                 CAIRN_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    assert done.returncode == 0, done.stderr
    [row] = [line for line in done.stdout.splitlines() if "cart-abandonment" in line]
    source = (folder / "cart-abandonment.yaml").relative_to(tmp_path)  # as published, from cwd
    assert f" {source} " in row, done.stdout
    assert "…" not in done.stdout


def _commands() -> list[str]:
    return sorted(command.name or command.callback.__name__
                  for command in app.registered_commands if command.callback is not None)


@pytest.mark.parametrize("command", ["", *_commands()])
def test_help_shows_no_type_on_flags(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "--help" in result.output
    assert "<bool>" not in result.output
