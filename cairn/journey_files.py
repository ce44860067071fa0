"""Journey files on disk: reading YAML or JSON into a `Journey` with its templates, and validating
files and folders so that every problem is reported at once with its file and path.

A problem reads `journeys/x.yaml: steps.remind_sms.send.template: unknown template 'x'`. Checks are
small functions over a loaded journey (`JOURNEY_CHECKS`); pydantic's errors are translated into
the same paths in one place (`_readable_path`). This module reads files but never publishes or
runs anything: the catalog and the CLI build on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cairn.conditions import (
    HasDoneCondition,
    PropertyCondition,
    condition_kind,
    filter_problems,
    leaves,
)
from cairn.graph import check_graph, steps_of
from cairn.journey import (
    IfStep,
    Journey,
    NotifyStep,
    SendStep,
    UpdateStep,
    WaitForEventStep,
    WebhookStep,
    step_kind,
)
from cairn.local_time import is_timezone
from cairn.schedule_times import ALIASES as CRON_ALIASES
from cairn.schedule_times import Cron, CronError
from cairn.templates import TemplateRenderError, parse_part, part_problems
from cairn.update_values import set_problems

JOURNEY_SUFFIXES = (".yaml", ".yml", ".json")
NOT_JOURNEYS = ("templates", "segments", "scoring")
"""Folders beside the journeys that hold other definitions (never scanned as journeys)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one file: `where` is a path in the file (`steps.x.next`) or a position."""

    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}" if self.where else (
            f"{self.file}: {self.message}"
        )


class DefinitionFileError(Exception):
    """Definition files (segments, scoring rules, geofences) that cannot be used.

    `.problems` lists every fix, each with its file and field; subclasses name what they hold.
    """

    holds = "definitions"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) to fix in {self.holds}:\n{lines}")


class JourneyFileError(Exception):
    """A journey file that cannot be used; `.problems` lists everything to fix."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) to fix:\n{lines}")


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


# --------------------------------------------------------------------------- pydantic errors


def _is_shorthand_filter(node: Any) -> bool:
    """`{properties.value: {gte: 20}}`: a filter written without a condition kind key."""
    return isinstance(node, dict) and condition_kind(node) == "all" and "all" not in node


def _readable_path(loc: tuple[int | str, ...], data: Any) -> str:
    """A pydantic location as the author wrote it: step names, no union tags.

    Pydantic puts the tag of a tagged union into the location (`steps.wait_2h.wait.wait`), and
    reports a filter shorthand as the `all` of `property` conditions it expands to. Walking the
    raw data alongside the location tells tags from fields, and maps the expansion back.
    """
    parts: list[str] = []
    node: Any = data
    union: str | None = None
    items = list(loc)
    while items:
        item = items.pop(0)
        if union == "step" and isinstance(node, dict) and item == step_kind(node):
            union = None
            continue
        if union == "condition" and isinstance(node, dict) and item == condition_kind(node):
            union = None
            if _is_shorthand_filter(node) and len(items) >= 2 and items[0] == "all":
                index = items[1]
                keys = list(node)
                if isinstance(index, int) and index < len(keys):
                    parts.append(str(keys[index]))
                    node = node[keys[index]]
                    # skip the expansion's `all`, index and `property` tag
                    items = items[3:] if len(items) > 2 and items[2] == "property" else items[2:]
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(item)
            node = node.get(item) if isinstance(node, dict) else None
        union = _union_at(parts, item)
    return ".".join(parts).replace(".[", "[")


def _union_at(parts: list[str], item: int | str) -> str | None:
    """Which tagged union (if any) the value at this location is a member of."""
    if len(parts) == 2 and parts[0] == "steps":
        return "step"
    if item in ("if", "where", "not"):
        return "condition"
    if isinstance(item, int) and len(parts) >= 2 and parts[-2] in ("all", "any"):
        return "condition"
    return None


def _readable_message(error: Any) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "step_kind" and isinstance(error.get("input"), dict):
        return f"{error['msg']} (this step has: {', '.join(map(str, error['input'])) or 'nothing'})"
    if kind == "extra_forbidden" and loc:
        return f"unknown field '{loc[-1]}'"
    if kind == "missing" and loc:
        return f"missing required field '{loc[-1]}'"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind == "literal_error":
        return message.replace("Input should be", "must be")
    return message[:1].lower() + message[1:] if not message[:2].isupper() else message


def model_problems(file: str, error: ValidationError, data: Any) -> list[Problem]:
    """Pydantic's errors as problems with the author's paths (the one place they are translated)."""
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        # an unknown or missing field is reported on the mapping that should (not) hold it
        owner = loc[:-1] if item["type"] in ("extra_forbidden", "missing") else loc
        problems.append(Problem(file, _readable_path(owner, data), _readable_message(item)))
    return problems


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
        if isinstance(step, SendStep):
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


# --------------------------------------------------------------------------- journey checks

JourneyCheck = Callable[[Journey], list[tuple[str, str]]]


def channel_parts(journey: Journey) -> list[tuple[str, str]]:
    """A send may use every channel it lists; its template needs a part for each."""
    problems = []
    for name, step in steps_of(journey).items():
        if not isinstance(step, SendStep) or step.send.template not in journey.templates:
            continue
        parts = journey.templates[step.send.template]
        for channel in step.send.candidates():
            if channel not in parts:
                where = "channel" if step.send.channel else "channels"
                problems.append((
                    f"steps.{name}.send.{where}",
                    f"template '{step.send.template}' has no '{channel}' part "
                    f"(it has: {', '.join(parts) or 'none'})",
                ))
    return problems


def inline_templates(journey: Journey) -> list[tuple[str, str]]:
    """Templates written in the journey file itself get the same checks as template files."""
    return [
        (f"templates.{name}.{where}" if where else f"templates.{name}", message)
        for name, parts in journey.templates.items()
        for where, message in part_problems(name, parts)
    ] if journey.templates else []


def webhook_bodies(journey: Journey) -> list[tuple[str, str]]:
    """A webhook body is a Liquid template too; a syntax error there would fail at send time."""
    problems = []
    for name, step in steps_of(journey).items():
        if isinstance(step, WebhookStep) and step.webhook.body is not None:
            try:
                parse_part(f"steps.{name}", "webhook.body", step.webhook.body)
            except TemplateRenderError as error:
                problems.append((f"steps.{name}.webhook.body", str(error)))
    return problems


def timezone(journey: Journey) -> list[tuple[str, str]]:
    if is_timezone(journey.settings.timezone):
        return []
    return [("settings.timezone", f"unknown time zone '{journey.settings.timezone}': use an "
                                  "IANA name such as 'Europe/Bucharest'")]


# --------------------------------------------------------------------------- schedule triggers


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def cron_problem(expression: str) -> str | None:
    """What is wrong with a `schedule` trigger's cron, or None when Temporal will take it.

    Cairn takes the five classic fields (minute, hour, day of month, month, day of week) with
    lists, ranges, steps and month and weekday names, and the aliases `@hourly` to `@yearly`:
    the part of Temporal Schedules' cron syntax whose meaning no one misreads. Temporal would
    take a sixth field as the year (not seconds, as some cron dialects do), so six or seven fields
    are refused; the time zone belongs in `timezone`, not in a `CRON_TZ=` prefix.
    """
    text = " ".join(expression.split())
    if text.startswith(("TZ=", "CRON_TZ=")):
        return "put the time zone in trigger.schedule.timezone, not in the cron"
    if text.startswith("@"):
        if text not in CRON_ALIASES:
            return (f"unknown cron shortcut '{text}': use five fields (minute hour day-of-month "
                    f"month day-of-week) or one of {', '.join(CRON_ALIASES)}")
        text = CRON_ALIASES[text]
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        extra = (" (Temporal would read a sixth field as the year, not as seconds)"
                 if len(fields) > 5 else "")
        return (f"'{expression}' has {len(fields)} field(s); a cron has five: minute hour "
                f"day-of-month month day-of-week, e.g. '0 9 * * mon'{extra}")
    try:
        cron = Cron.parse(text)
    except CronError as error:
        return f"'{expression}': {error}"
    if min(cron.days) > max(_DAYS_IN_MONTH[m - 1] for m in cron.months):
        return f"'{expression}' never fires: no chosen month has day {min(cron.days)}"
    return None


def schedule_trigger(journey: Journey) -> list[tuple[str, str]]:
    """A schedule's cron and time zone are checked here, not first by Temporal at publish time."""
    schedule = journey.trigger.schedule
    if schedule is None:
        return []
    problems = []
    found = cron_problem(schedule.cron)
    if found is not None:
        problems.append(("trigger.schedule.cron", found))
    if not is_timezone(schedule.timezone):
        problems.append(("trigger.schedule.timezone",
                         f"unknown time zone '{schedule.timezone}': use an IANA name such as "
                         "'Europe/Bucharest'"))
    return problems


# --------------------------------------------------------------------------- conditions in place

_FILTER_ADVICE = {
    "trigger": "the trigger filter sees only the event (its name, properties and timestamp), "
               "not the contact; move it into an `if` step at the start of the journey",
    "exit": "an exit goal's filter sees only the event as it arrives, not the contact; test the "
            "contact in an `if` step instead",
    "wait": "a wait's filter sees only the event it waits for, not the contact; test the contact "
            "in an `if` step after the wait",
    "has_done": "has_done's `where` sees only each stored event, not the contact; put the "
                "contact's conditions beside the has_done in an `all`",
}


def _filter_messages(condition: Any, path: str, place: str) -> list[tuple[str, str]]:
    problems = []
    for where, kind in filter_problems(condition, path):
        if kind == "property with event":
            problems.append((where, "`event:` reads an event caught by a wait_for_event step and "
                                    "works only in `if` steps; a filter reads the event it "
                                    "filters, so remove `event:` here"))
        else:
            problems.append((where, f"`{kind}` conditions cannot work here: "
                                    f"{_FILTER_ADVICE[place]}"))
    return problems


def _if_conditions(journey: Journey) -> list[tuple[str, Any]]:
    """Every leaf condition of the journey's `if` steps, with its path (`steps.x.if.all[0]`)."""
    return [
        (where, leaf)
        for name, step in steps_of(journey).items() if isinstance(step, IfStep)
        for where, leaf in leaves(step.if_, f"steps.{name}.if")
    ]


def event_filters(journey: Journey) -> list[tuple[str, str]]:
    """Filters (`where`) are decided on an event alone: a condition on the contact, its history
    or its channels there would never see them, so it is refused before it silently fails."""
    problems = []
    if journey.trigger.where is not None:
        problems += _filter_messages(journey.trigger.where, "trigger.where", "trigger")
    for index, goal in enumerate(journey.exit):
        if goal.where is not None:
            problems += _filter_messages(goal.where, f"exit[{index}].where", "exit")
    for name, step in steps_of(journey).items():
        if isinstance(step, WaitForEventStep) and step.wait_for_event.where is not None:
            problems += _filter_messages(step.wait_for_event.where,
                                         f"steps.{name}.wait_for_event.where", "wait")
    for where, leaf in _if_conditions(journey):
        if isinstance(leaf, HasDoneCondition) and leaf.has_done.where is not None:
            problems += _filter_messages(leaf.has_done.where, f"{where}.has_done.where",
                                         "has_done")
    return problems


def caught_event_conditions(journey: Journey) -> list[tuple[str, str]]:
    """`{property: ..., event: x}` reads the event `x` a wait caught: some wait must catch it."""
    caught = list(dict.fromkeys(
        step.wait_for_event.event for step in steps_of(journey).values()
        if isinstance(step, WaitForEventStep)
    ))
    problems = []
    for where, leaf in _if_conditions(journey):
        if isinstance(leaf, PropertyCondition) and leaf.event and leaf.event not in caught:
            found = (f"its waits catch: {', '.join(caught)}" if caught
                     else "it has no wait_for_event step")
            problems.append((f"{where}.event", f"no wait_for_event step of this journey catches "
                                               f"'{leaf.event}' ({found})"))
    return problems


def update_values(journey: Journey) -> list[tuple[str, str]]:
    """Liquid in `update.set` values is checked like message templates (syntax, filters)."""
    return [
        (f"steps.{name}.update.set.{where}", message)
        for name, step in steps_of(journey).items() if isinstance(step, UpdateStep)
        for where, message in set_problems(name, step.update.set)
    ]


JOURNEY_CHECKS: tuple[JourneyCheck, ...] = (
    check_graph, channel_parts, webhook_bodies, timezone, schedule_trigger, event_filters,
    caught_event_conditions, update_values,
)


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
        return None, problems + model_problems(file, error, data)
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
    "JOURNEY_CHECKS", "JourneyFileError", "Problem", "Validation", "cron_problem", "find_journey",
    "journey_files", "load_journey", "model_problems", "read_document", "validate",
    "validate_paths",
]
