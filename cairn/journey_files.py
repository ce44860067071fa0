"""Journey files on disk: reading YAML or JSON into a `Journey` with its templates, and validating
files and folders so that every problem is reported at once with its file and path.

A problem reads `journeys/x.yaml: steps.remind_sms.send.template: unknown template 'x'`. The
wording of problems is `cairn.problems`; the checks beyond the schema are
`cairn.journey_checks`. A journey with schema errors is still checked as far as it can be (its
graph and templates, from the steps that are readable), so one run lists everything to fix. This
module reads files but never publishes or runs anything: the catalog and the CLI build on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from cairn.graph import WAITING_KINDS, check_graph, steps_of
from cairn.journey import (
    END,
    STEP_KINDS,
    Journey,
    NotifyStep,
    Send,
    SendStep,
    Split,
    SplitPath,
    SplitStep,
    Step,
    StepBase,
    TemplateParts,
    WaitStep,
    step_kind,
)
from cairn.journey_checks import JOURNEY_CHECKS, channel_parts, inline_templates
from cairn.problems import JourneyFileError, Problem, model_problems
from cairn.templates import part_problems

JOURNEY_SUFFIXES = (".yaml", ".yml", ".json")

Model = TypeVar("Model", bound=BaseModel)


# --------------------------------------------------------------------------- reading


class _JourneyYaml(yaml.SafeLoader):
    """YAML with the surprises of YAML 1.1 removed.

    `from: 21:00` would be the number 1260 (base 60), `on`/`no` booleans and dates objects: a
    journey author means the text they wrote. Duplicate keys (two steps with the same name) are
    collected instead of the later one silently winning.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, yaml.Mark]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str | int | float | bool) and key in seen:
                self.duplicates.append((str(key), key_node.start_mark))
            seen.add(key if isinstance(key, str | int | float | bool) else id(key))
        return super().construct_mapping(node, deep=deep)


_PLAIN_TAGS = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
               "tag:yaml.org,2002:timestamp"}
_JourneyYaml.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _PLAIN_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_JourneyYaml.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_JourneyYaml.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_JourneyYaml.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _where_mark(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def read_document(path: Path) -> tuple[Any, list[Problem]]:
    """The raw content of a YAML or JSON file, or the problems that stop it being read."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return None, [Problem(file, "", f"cannot read the file: {error}")]
    if path.suffix == ".json":
        return _read_json(file, text)
    loader = _JourneyYaml(text)
    try:
        data = loader.get_single_data()  # type: ignore[no-untyped-call]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        reason = ": ".join(str(x) for x in (error.context, error.problem) if x)
        return None, [Problem(file, _where_mark(mark), f"malformed YAML: {reason}")]
    except yaml.YAMLError as error:
        return None, [Problem(file, "", f"malformed YAML: {error}")]
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
    problems = [
        Problem(file, _where_mark(mark), f"duplicate key '{key}': the later one would replace "
                                         "the earlier; rename one of them")
        for key, mark in loader.duplicates
    ]
    return data, problems


def _read_json(file: str, text: str) -> tuple[Any, list[Problem]]:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        duplicates.extend(k for i, k in enumerate(keys) if k in keys[:i])
        return dict(items)

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as error:
        return None, [Problem(file, f"line {error.lineno}, column {error.colno}",
                              f"malformed JSON: {error.msg}")]
    return data, [Problem(file, "", f"duplicate key '{k}': rename one of them") for k in duplicates]


# --------------------------------------------------------------------------- templates


def template_file(folder: Path, name: str) -> Path | None:
    """`templates/<name>.yaml` (or .yml, .json) in `folder`, if there is one."""
    for suffix in JOURNEY_SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def referenced_templates(journey: Journey) -> dict[str, list[str]]:
    """Template names used by sends and notify steps, with the paths that use them."""
    used: dict[str, list[str]] = {}
    for name, step in steps_of(journey).items():
        if isinstance(step, SendStep) and step.send.variants:
            for index, variant in enumerate(step.send.variants):
                used.setdefault(variant.template, []).append(
                    f"steps.{name}.send.variants[{index}].template")
        elif isinstance(step, SendStep):
            used.setdefault(step.send.template, []).append(f"steps.{name}.send.template")
        elif isinstance(step, NotifyStep):
            used.setdefault(step.notify.template, []).append(f"steps.{name}.notify.template")
    return used


def read_template(path: Path, name: str) -> tuple[dict[str, dict[str, str]] | None, list[Problem]]:
    """A template file's parts, checked (shape, required parts, Liquid syntax, filters)."""
    data, problems = read_document(path)
    if problems and data is None:
        return None, problems
    found = [Problem(str(path), where, message) for where, message in part_problems(name, data)]
    if found:
        return None, problems + found
    return data, problems


def load_templates(journey: Journey, folder: Path, file: str) -> list[Problem]:
    """Fill `journey.templates` with every referenced template from `folder` (`templates/`).

    Templates written inline in the journey file win over files of the same name.
    """
    problems: list[Problem] = []
    for name, where in referenced_templates(journey).items():
        if name in journey.templates:
            continue
        path = template_file(folder, name)
        if path is None:
            problems.extend(Problem(file, w, f"unknown template '{name}' (no {folder}/{name}.yaml)")
                            for w in where)
            continue
        parts, found = read_template(path, name)
        problems.extend(found)
        if parts is not None:
            journey.templates[name] = parts
    return problems


# --------------------------------------------------------------------------- failed schemas

_STEP: TypeAdapter[StepBase] = TypeAdapter(Step)
_INLINE_TEMPLATES: TypeAdapter[dict[str, TemplateParts]] = TypeAdapter(dict[str, TemplateParts])
_ROUTE_FIELDS = {"next": "next", "then": "then", "else": "else_", "timeout_next": "timeout_next",
                 "missing": "missing"}
"""Routing keys as written in a step, and the model field each fills."""


class _UnreadableStep(WaitStep):
    """Stands in for a step that failed its schema, with the routes written in it.

    It counts as a waiting step, so no loop through it is reported as busy: whether it waits is
    unknown until the author fixes it, and a guess would be a false alarm.
    """

    then: str | None = None
    else_: str | None = Field(default=None, alias="else")
    timeout_next: str | None = None
    missing: str | None = None


def _routes_of(raw: dict[str, Any]) -> StepBase:
    """A step's routes read from what the author wrote, without validating the rest of it.

    Sends keep `on_failure` and splits their paths (routes written inside the step's body);
    waits and steps of no recognisable kind stand in as `_UnreadableStep`.
    """
    routes = {name: raw[key] for key, name in _ROUTE_FIELDS.items()
              if isinstance(raw.get(key), str)}
    kind = step_kind(raw)
    body = raw.get(kind) if kind is not None else None
    body = body if isinstance(body, dict) else {}
    if kind == "send":
        on_failure = body.get("on_failure")
        send = _unchecked(Send, on_failure=on_failure if isinstance(on_failure, str) else None)
        return _unchecked(SendStep, send=send, **routes)
    if kind == "split":
        written = raw.get("paths", body.get("paths"))
        targets = written if isinstance(written, list) else []
        paths = [_unchecked(SplitPath, next=p["next"]) for p in targets
                 if isinstance(p, dict) and isinstance(p.get("next"), str)]
        return _unchecked(SplitStep, split=_unchecked(Split, paths=paths))
    if kind is not None and not issubclass(STEP_KINDS[kind], WAITING_KINDS):
        return _unchecked(STEP_KINDS[kind], **routes)
    return _unchecked(_UnreadableStep, **routes)


def _unchecked(model: type[Model], **fields: Any) -> Model:
    """`model` holding `fields` alone, unvalidated: enough for checks that read routes."""
    return model.model_construct(**fields)


def _readable_part_problems(data: dict[str, Any], templates: Path, file: str) -> list[Problem]:
    """Graph and template problems of a journey that failed its schema, from the steps that are
    readable (unreadable ones keep their routes), so one validation lists everything to fix."""
    written = data.get("steps")
    if not isinstance(written, dict) or not written:
        return []
    steps: dict[str, StepBase] = {}
    readable: dict[str, StepBase] = {}
    for name, raw in written.items():
        if not isinstance(name, str) or name == END:
            continue  # reported by the schema; nothing can route to it by that name
        try:
            steps[name] = readable[name] = _STEP.validate_python(raw)
        except ValidationError:
            steps[name] = _routes_of(raw if isinstance(raw, dict) else {})
    start = data.get("start")
    graph = _unchecked(Journey, steps=steps, start=start if isinstance(start, str) else None)
    problems = [Problem(file, where, message) for where, message in check_graph(graph)]
    sends = _unchecked(Journey, steps=readable, templates={})
    if data.get("templates"):
        try:
            sends.templates = _INLINE_TEMPLATES.validate_python(data["templates"])
        except ValidationError:
            return problems  # which templates the sends mean is unknown until these are fixed
    problems += load_templates(sends, templates, file)
    problems += [Problem(file, where, message) for where, message in channel_parts(sends)]
    return problems


# --------------------------------------------------------------------------- loading


def _parse_journey(path: Path) -> tuple[Journey | None, list[Problem]]:
    """A journey with its templates, and every problem found in it and its templates."""
    file = str(path)
    data, problems = read_document(path)
    if data is None and problems:
        return None, problems
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        return None, [*problems, Problem(
            file, "", f"a journey file holds one mapping (key, name, trigger, steps, ...); "
                      f"this one is {kind}")]
    inline = bool(data.get("templates"))
    try:
        journey = Journey.model_validate(data)
    except ValidationError as error:
        problems += model_problems(file, error, data)
        return None, problems + _readable_part_problems(data, path.parent / "templates", file)
    if inline:
        problems += [Problem(file, w, m) for w, m in inline_templates(journey)]
    problems += load_templates(journey, path.parent / "templates", file)
    for check in JOURNEY_CHECKS:
        problems += [Problem(file, where, message) for where, message in check(journey)]
    return journey, problems


def load_journey(path: Path) -> Journey:
    """Read a journey file (YAML or JSON) and the templates it uses from `templates/` beside it.

    Raises `JourneyFileError` listing every problem when the journey is not fit to publish.
    """
    journey, problems = _parse_journey(Path(path))
    if problems or journey is None:
        raise JourneyFileError(problems)
    return journey


# --------------------------------------------------------------------------- validating


@dataclass
class Validation:
    """What `validate` found: the journeys that loaded cleanly and every problem (in file order)."""

    journeys: list[tuple[Path, Journey]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def journey_files(folder: Path) -> list[Path]:
    """Journey files directly in a folder (subfolders such as templates/ are never journeys)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in JOURNEY_SUFFIXES)


def _expand(paths: Iterable[Path]) -> tuple[list[Path], list[Problem], list[Path]]:
    files: list[Path] = []
    problems: list[Problem] = []
    folders: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = journey_files(path)
            if not found:
                problems.append(Problem(str(path), "", "no journey files (*.yaml, *.yml, *.json) "
                                                       "in this folder"))
            files += found
            folders.append(path)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), "", "no such file or folder"))
    return files, problems, folders


def _unused_template_problems(folders: list[Path]) -> list[Problem]:
    """Templates in a validated folder are checked even if no journey uses them yet."""
    problems = []
    for folder in folders:
        templates = folder / "templates"
        if templates.is_dir():
            for path in journey_files(templates):
                problems += read_template(path, path.stem)[1]
    return problems


def validate(paths: Iterable[Path]) -> Validation:
    """Validate journey files and folders together (a key must be defined in one file only)."""
    files, problems, folders = _expand(Path(p) for p in paths)
    result = Validation(problems=problems)
    owners: dict[str, Path] = {}
    for path in dict.fromkeys(files):
        journey, found = _parse_journey(path)
        result.problems += found
        if journey is None:
            continue
        if journey.key in owners:
            result.problems.append(Problem(str(path), "key", f"journey key '{journey.key}' is "
                                           f"also defined in {owners[journey.key]}"))
            continue
        owners[journey.key] = path
        if not found:
            result.journeys.append((path, journey))
    result.problems += _unused_template_problems(folders)
    result.problems = list(dict.fromkeys(result.problems))
    return result


def validate_paths(paths: list[Path]) -> list[Problem]:
    """Every problem in the given journey files and folders; empty when all are fit to publish."""
    return validate(paths).problems


def find_journey(key: str, folder: Path) -> Path:
    """The file in `folder` that defines journey `key` (`<key>.yaml` first, then by content)."""
    for suffix in JOURNEY_SUFFIXES:
        candidate = folder / f"{key}{suffix}"
        if candidate.is_file():
            return candidate
    if folder.is_dir():
        for path in journey_files(folder):
            data, _ = read_document(path)
            if isinstance(data, dict) and data.get("key") == key:
                return path
    raise JourneyFileError([Problem(str(folder), "", f"no journey with key '{key}' here; "
                                                     "give a file path or a key from this folder")])


__all__ = [
    "JOURNEY_SUFFIXES", "Validation", "find_journey", "journey_files", "load_journey",
    "read_document", "read_template", "validate", "validate_paths",
]
