"""The definitions kept beside the journeys in a catalog folder, found and loaded in one place.

```
journeys/
  segments/*.yaml          one segment per file                      load_segments
  scoring/*.yaml           one scoring file: rules, decay, thresholds   load_scoring
  geofences/*.yaml         one fence per file                        load_geofences
  policies/delivery.yaml   quiet hours and frequency caps            load_policy
```

Every kind is read the same way: the files directly in its folder with a definition suffix
(`.yaml`, `.yml`, `.json`), in name order (`definition_files`); each read by `read_document` (YAML
without 1.1's surprises, a duplicate key reported), parsed by its kind's module, and every problem
of every file gathered into one error of the `DefinitionFileError` family, each problem naming its
file and field. A missing folder (or policy file) holds nothing.

What a definition means (deciding a segment, matching a scoring rule, containing a position,
holding a message) is its kind's module: `cairn.segments`, `cairn.scoring`, `cairn.geofences`,
`cairn.delivery_policy`. Journey files and their templates are `cairn.journey_files`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cairn.delivery_policy import DeliveryPolicy, PolicyError, parse_policy
from cairn.geofences import Geofence, GeofenceFileError, parse_geofence
from cairn.journey_files import JOURNEY_SUFFIXES, read_document
from cairn.problems import Problem
from cairn.scoring import Scoring, ScoringFileError, ScoringRules, parse_scoring
from cairn.segments import (
    Segment,
    SegmentFileError,
    evaluation_order,
    parse_segment,
    segment_problems,
)

SEGMENTS = "segments"
SCORING = "scoring"
GEOFENCES = "geofences"
POLICY_FILE = Path("policies") / "delivery.yaml"

DEFINITION_SUFFIXES = JOURNEY_SUFFIXES
"""Definitions are written like journeys: YAML, or JSON."""

T = TypeVar("T")


def definition_files(folder: Path) -> list[Path]:
    """The definition files directly in a folder (`segments/`, ...), in name order; none when
    the folder is missing."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in DEFINITION_SUFFIXES)


def _parsed(
    folder: Path, parse: Callable[[str, Any], tuple[T | None, list[Problem]]],
) -> Iterator[tuple[str, T | None, list[Problem]]]:
    """Each file of `folder` read and parsed: (file, definition or None, the file's problems)."""
    for path in definition_files(folder):
        data, problems = read_document(path)
        if data is None and problems:
            yield str(path), None, problems
            continue
        definition, found = parse(str(path), data)
        yield str(path), definition, [*problems, *found]


def load_segments(catalog: Path) -> list[Segment]:
    """Every segment in the catalog's `segments/`, in evaluation order (a segment after those
    it reads).

    Raises `SegmentFileError` listing every problem of every file, and those across files
    (a key defined twice, an unknown `in_segment`, segments defined through each other).
    """
    loaded: list[tuple[str, Segment]] = []
    problems: list[Problem] = []
    for file, segment, found in _parsed(Path(catalog) / SEGMENTS, parse_segment):
        problems += found
        if segment is not None:
            loaded.append((file, segment))
    problems += segment_problems(loaded)
    if problems:
        raise SegmentFileError(problems)
    return evaluation_order([segment for _, segment in loaded])


def load_scoring(catalog: Path, *, segments: set[str] | None = None) -> Scoring:
    """Every scoring file in the catalog's `scoring/`; raises `ScoringFileError` listing all
    problems.

    With `segments` (the known segment keys), a decay on entering an unknown segment is an error.
    """
    files: list[ScoringRules] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for file, rules, found in _parsed(Path(catalog) / SCORING, parse_scoring):
        problems += found
        if rules is None:
            continue
        if rules.key in seen:
            problems.append(Problem(file, "key", f"scoring key '{rules.key}' is also used "
                                                 f"by {seen[rules.key]}; keys must be unique"))
        seen[rules.key] = file
        for index, decay in enumerate(rules.decay):
            if segments is not None and decay.segment_entered is not None \
                    and decay.segment_entered not in segments:
                problems.append(Problem(
                    file, f"decay[{index}].segment_entered",
                    f"no segment '{decay.segment_entered}' (known: "
                    f"{', '.join(sorted(segments)) or 'none'})"))
        files.append(rules)
    if problems:
        raise ScoringFileError(problems)
    return Scoring(files)


def load_geofences(catalog: Path) -> list[Geofence]:
    """Every fence in the catalog's `geofences/`, in key order.

    Raises `GeofenceFileError` listing every problem of every file (unreadable YAML, a missing or
    out-of-range field, a key defined twice).
    """
    loaded: list[tuple[str, Geofence]] = []
    problems: list[Problem] = []
    for file, fence, found in _parsed(Path(catalog) / GEOFENCES, parse_geofence):
        problems += found
        if fence is not None:
            loaded.append((file, fence))
    seen: dict[str, str] = {}
    for file, fence in loaded:
        if fence.key in seen:
            problems.append(Problem(file, "key", f"geofence '{fence.key}' is also defined in "
                                                 f"{seen[fence.key]}; keys must be unique"))
        else:
            seen[fence.key] = file
    if problems:
        raise GeofenceFileError(problems)
    return sorted((fence for _, fence in loaded), key=lambda f: f.key)


def load_policy(catalog: Path) -> DeliveryPolicy:
    """The policy in the catalog's `policies/delivery.yaml`, or an empty one when there is none.

    Raises `PolicyError` listing every problem of the file.
    """
    path = Path(catalog) / POLICY_FILE
    if not path.exists():
        return DeliveryPolicy()
    data, problems = read_document(path)
    if data is None and problems:
        raise PolicyError(problems)
    policy, found = parse_policy(str(path), data)
    problems += found
    if problems or policy is None:
        raise PolicyError(problems)
    return policy


# --------------------------------------------------------------------------- profile rules


def load_profile_rules(catalog: Path) -> tuple[list[Segment], Scoring]:
    """The catalog's segments and scoring rules, the decays checked against the segment keys.

    Raises `SegmentFileError` / `ScoringFileError` naming every file and field to fix.
    """
    segments = load_segments(catalog)
    return segments, load_scoring(catalog, segments={s.key for s in segments})


_PROFILE_RULES: dict[Path, tuple[tuple[Any, ...], list[Segment], Scoring]] = {}


def current_profile_rules(catalog: Path) -> tuple[list[Segment], Scoring]:
    """`load_profile_rules`, parsed again only when a file of `segments/` or `scoring/` changed
    (by path, modification time and size).

    The sweeps need them for every batch; parsing and validating every file a hundred times per
    sweep was a measurable share of a sweep that changes nothing.
    """
    catalog = Path(catalog)
    signature = tuple(
        (str(path), stat.st_mtime_ns, stat.st_size)
        for kind in (SEGMENTS, SCORING) for path in definition_files(catalog / kind)
        for stat in [path.stat()]
    )
    cached = _PROFILE_RULES.get(catalog)
    if cached is None or cached[0] != signature:
        segments, scoring = load_profile_rules(catalog)
        cached = _PROFILE_RULES[catalog] = (signature, segments, scoring)
    return cached[1], cached[2]


__all__ = [
    "DEFINITION_SUFFIXES",
    "GEOFENCES",
    "POLICY_FILE",
    "SCORING",
    "SEGMENTS",
    "current_profile_rules",
    "definition_files",
    "load_geofences",
    "load_policy",
    "load_profile_rules",
    "load_scoring",
    "load_segments",
]
