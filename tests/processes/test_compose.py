"""docker-compose.yml, the Dockerfile and the docs agree with the settings.

Docker cannot run where the tests run, so these read the files: a renamed setting, a service
pointed at the wrong host or a port that moved breaks here instead of in someone's first
`docker compose up`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from cairn.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CAIRN_SERVICES = ("api", "worker")
VARIABLE = re.compile(r"\bCAIRN_[A-Z0-9_]+\b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict) and isinstance(loaded.get("services"), dict)
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whether written as a mapping or as KEY=value."""
    given = service.get("environment") or {}
    if isinstance(given, list):
        return dict(item.split("=", 1) for item in given)
    return {name: str(value) for name, value in given.items()}


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """host port -> container port for every short-syntax mapping of a service."""
    mapped: dict[int, int] = {}
    for entry in service.get("ports") or []:
        host, _, container = str(entry).rpartition(":")
        mapped[int(host.rpartition(":")[2])] = int(container.split("/")[0])
    return mapped


def setting_variables() -> set[str]:
    from cairn.channels.smtp import SmtpSettings

    smtp = {f"CAIRN_SMTP_{name.upper()}" for name in SmtpSettings.model_fields}
    return {f"CAIRN_{name.upper()}" for name in Settings.model_fields} | smtp


def test_every_part_of_the_stack_is_a_service(compose: dict[str, Any]) -> None:
    found = services(compose)
    for name in ("postgresql", "temporal", "temporal-ui", "mailpit", "api", "worker"):
        assert name in found, f"docker-compose.yml has no {name!r} service"
    assert "temporalio/auto-setup" in found["temporal"]["image"]
    assert "temporalio/ui" in found["temporal-ui"]["image"]
    assert found["postgresql"]["image"].startswith("postgres:")
    assert "mailpit" in found["mailpit"]["image"]


def test_ports_are_the_documented_ones(compose: dict[str, Any]) -> None:
    found = services(compose)
    assert published_ports(found["temporal"]) == {7233: 7233}
    assert published_ports(found["temporal-ui"]) == {8233: 8080}
    assert published_ports(found["api"]) == {8000: 8000}
    assert published_ports(found["mailpit"]) == {8025: 8025, 1025: 1025}
    assert environment(found["api"])["CAIRN_API_PORT"] == "8000"
    # Inside a container the API must listen on every interface to be reachable at all.
    assert environment(found["api"])["CAIRN_API_HOST"] == "0.0.0.0"


def test_every_port_is_published_on_the_host_loopback_only(compose: dict[str, Any]) -> None:
    published = [(name, str(entry)) for name, service in compose["services"].items()
                 for entry in service.get("ports") or []]
    assert published and [p for p in published if not p[1].startswith("127.0.0.1:")] == []


def test_temporal_keeps_its_state_in_the_postgresql_service(compose: dict[str, Any]) -> None:
    found = services(compose)
    temporal = environment(found["temporal"])
    postgres = environment(found["postgresql"])
    assert temporal["DB"] == "postgres12"
    assert temporal["POSTGRES_SEEDS"] == "postgresql"
    assert (temporal["POSTGRES_USER"], temporal["POSTGRES_PWD"]) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    assert environment(found["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_every_cairn_variable_is_a_setting(compose: dict[str, Any]) -> None:
    known = setting_variables()
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    text += (ROOT / "Dockerfile").read_text(encoding="utf-8")
    used = set(VARIABLE.findall(text))
    assert used, "docker-compose.yml sets no CAIRN_* variable"
    assert used <= known, f"not fields of cairn.settings.Settings: {sorted(used - known)}"
    # ... and the values parse as those settings (a boolean that is not one fails here).
    for name in CAIRN_SERVICES:
        values = {key[len("CAIRN_"):].lower(): value
                  for key, value in environment(services(compose)[name]).items()
                  if key.startswith("CAIRN_")}
        Settings.model_validate(values)


@pytest.mark.parametrize("name", CAIRN_SERVICES)
def test_api_and_worker_use_temporal_and_postgresql(compose: dict[str, Any], name: str) -> None:
    found = services(compose)
    service = found[name]
    env = environment(service)
    assert env["CAIRN_TEMPORAL_ADDRESS"] == "temporal:7233"
    url = make_url(env["CAIRN_DATABASE_URL"])
    assert url.drivername == "postgresql+asyncpg"
    assert url.host == "postgresql" and (url.port or 5432) == 5432
    postgres = environment(found["postgresql"])
    assert (url.username, url.password, url.database) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    assert service["command"] == ["cairn", name]
    # Both run the image built from the repository's Dockerfile.
    built = {s.get("image") for s in found.values() if _builds_the_dockerfile(s)}
    assert (ROOT / "Dockerfile").is_file()
    assert _builds_the_dockerfile(service) or service.get("image") in built


def _builds_the_dockerfile(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if isinstance(build, dict):
        return build.get("context", ".") == "." and build.get("dockerfile", "Dockerfile") == (
            "Dockerfile")
    return build == "."


def test_the_store_driver_is_a_dependency() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"asyncpg[>=<~ ]', pyproject), "asyncpg is missing from the dependencies"


def test_the_dockerfile_builds_a_non_root_image_with_both_commands() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\s*$", dockerfile, re.MULTILINE)
    assert re.search(r"pip install \.", dockerfile)
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert 'CMD ["cairn", "api"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".git" in ignored and ".cairn" in ignored


def test_the_docs_show_how_to_start_the_stack() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "docker compose up" in readme
    assert "docker compose up" in operations
    # Every variable the stack sets is in the README's configuration table.
    documented = set(re.findall(r"^\| `(CAIRN_[A-Z0-9_]+)`", readme, re.MULTILINE))
    used = set(VARIABLE.findall((ROOT / "docker-compose.yml").read_text(encoding="utf-8")))
    assert used <= documented, f"missing from README's configuration table: {used - documented}"
