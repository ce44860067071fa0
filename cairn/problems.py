"""Problems in definition files and how they are worded, in one place.

A problem names its file, the path in the file an author can find (`steps.remind_sms.send.template`)
and what to fix. Pydantic's errors become such problems here (`model_problems`), with the paths
as the author wrote them. This module reads no files and decides nothing about a journey: reading
is `cairn.journey_files`, the checks are `cairn.journey_checks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cairn.conditions import condition_kind
from cairn.journey import step_kind


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

