"""The suite's own promise: every test sees Cairn's default settings, whatever the developer's
shell exports or a `.env` in the working directory says (`isolated_settings`, autouse, in
tests/conftest.py).

Each test plants what a developer's machine may hold and checks that the test still sees the
defaults; without the fixture they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.journey_run import JOURNEY_TASK_QUEUE
from cairn.settings import Settings, get_settings
from tests.conftest import POSTGRES_URL_VARIABLE


@pytest.fixture(scope="module")
def developer_shell() -> Iterator[None]:
    """`CAIRN_*` variables exported before the tests start, as in a developer's shell.

    Module scope puts them in place before the per-test isolation runs, as a real shell's
    variables are; they are taken away again after this module.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CAIRN_JOURNEY_TASK_QUEUE", "developer-queue")
        patch.setenv("CAIRN_EMAIL_PROVIDER", "postmark")
        patch.setenv("CAIRN_POSTMARK_SERVER_TOKEN", "developer-token")
        if POSTGRES_URL_VARIABLE not in os.environ:
            patch.setenv(POSTGRES_URL_VARIABLE, "postgresql+asyncpg://ci@127.0.0.1:5433/cairn")
        yield


def test_exported_cairn_variables_do_not_reach_settings(developer_shell: None) -> None:
    assert not {"CAIRN_JOURNEY_TASK_QUEUE", "CAIRN_EMAIL_PROVIDER",
                "CAIRN_POSTMARK_SERVER_TOKEN"} & set(os.environ)
    settings = Settings()
    assert settings.journey_task_queue == JOURNEY_TASK_QUEUE
    assert settings.email_provider == "outbox"
    assert get_settings().journey_task_queue == JOURNEY_TASK_QUEUE


def test_the_variable_naming_the_test_postgres_server_is_kept(developer_shell: None) -> None:
    assert os.environ.get(POSTGRES_URL_VARIABLE)


def test_a_dotenv_in_the_working_directory_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("CAIRN_API_PORT=1\nCAIRN_LOG_LEVEL=DEBUG\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert Settings(_env_file=".env").api_port == 1  # the file is one Cairn would read
    assert Settings().api_port == 8000
    assert Settings().log_level == "INFO"
    assert get_settings().api_port == 8000


def test_a_test_may_still_set_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_API_PORT", "2")
    assert Settings().api_port == 2
    assert get_settings().api_port == 2  # cached now: the next test must not see it


def test_settings_cached_by_an_earlier_test_are_forgotten() -> None:
    """Runs after the test above (pytest keeps the order of a file), which cached port 2."""
    assert get_settings().api_port == 8000
