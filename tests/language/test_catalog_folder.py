"""The definitions beside the journeys: one file lister, one reader and one error family for
segments, scoring, geofences and the delivery policy (`cairn.catalog_folder`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cairn.catalog_folder import (
    POLICY_FILE,
    current_profile_rules,
    definition_files,
    load_geofences,
    load_policy,
    load_profile_rules,
    load_scoring,
    load_segments,
)
from cairn.conditions import HasDoneCondition
from cairn.delivery_policy import PolicyError
from cairn.problems import DefinitionFileError
from cairn.scoring import ScoringFileError

BUYERS = "key: buyers\nrule: {has_done: {event: purchase, count: {gte: 1}}}\n"
ENGAGEMENT = "key: engagement\ndecay:\n  - {segment_entered: buyers, add: -5}\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_definition_files_are_yaml_or_json_directly_in_the_folder_in_name_order(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "segments"
    for name in ("b.yml", "a.yaml", "c.json", "notes.md", "nested/d.yaml"):
        write(folder / name, "{}")
    assert [p.name for p in definition_files(folder)] == ["a.yaml", "b.yml", "c.json"]
    assert definition_files(tmp_path / "missing") == []


def test_an_empty_catalog_folder_holds_nothing(tmp_path: Path) -> None:
    assert load_segments(tmp_path) == []
    assert load_scoring(tmp_path).files == []
    assert load_geofences(tmp_path) == []
    policy = load_policy(tmp_path)
    assert policy.quiet_hours == {} and policy.caps == []


def test_every_kind_reports_problems_with_file_and_field_in_one_error_family(
    tmp_path: Path,
) -> None:
    segment = write(tmp_path / "segments" / "a.yaml", "key: a\nrule: {attribute: x, gtt: 1}\n")
    scoring = write(tmp_path / "scoring" / "s.yaml", "key: s\nrules: [{event: x}]\n")
    fence = write(tmp_path / "geofences" / "f.yaml", "key: f\nlatitude: 95\nlongitude: 1\n"
                                                    "radius_m: 5\n")
    policy = write(tmp_path / POLICY_FILE, "caps:\n  - {max: 0, per: 7d}\n")
    for load, file, where in ((load_segments, segment, "rule"),
                              (load_scoring, scoring, "rules[0]"),
                              (load_geofences, fence, "latitude"),
                              (load_policy, policy, "caps[0].max")):
        with pytest.raises(DefinitionFileError) as raised:
            load(tmp_path)
        assert [p.file for p in raised.value.problems] == [str(file)]
        assert raised.value.problems[0].where == where


def test_the_policy_is_read_like_the_other_definitions(tmp_path: Path) -> None:
    path = write(tmp_path / POLICY_FILE,
                 "quiet_hours:\n  sms: {from: 21:00, to: 09:00}\ncaps:\n  - {max: 3, per: 7d}\n")
    policy = load_policy(tmp_path)
    # Unquoted times stay text, as in journeys (YAML 1.1 would read 21:00 as the number 1260).
    assert policy.quiet_hours["sms"].from_ == "21:00"
    assert [cap.describe() for cap in policy.caps] == ["at most 3 marketing per 7d on all "
                                                       "channels"]
    write(path, "caps: [\n")
    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path)
    [problem] = raised.value.problems
    assert problem.file == str(path) and "malformed YAML" in problem.message
    assert "in the delivery policy" in str(raised.value)
    write(path, "caps: []\ncaps: [{max: 1, per: 1d}]\n")
    with pytest.raises(PolicyError, match="duplicate key 'caps'"):
        load_policy(tmp_path)
    write(path, "")
    assert load_policy(tmp_path).caps == []


def test_profile_rules_check_decays_against_the_segments(tmp_path: Path) -> None:
    write(tmp_path / "segments" / "buyers.yaml", BUYERS)
    write(tmp_path / "scoring" / "engagement.yaml", ENGAGEMENT)
    segments, scoring = load_profile_rules(tmp_path)
    assert [s.key for s in segments] == ["buyers"]
    assert [f.key for f in scoring.files] == ["engagement"]
    (tmp_path / "segments" / "buyers.yaml").unlink()
    with pytest.raises(ScoringFileError, match="no segment 'buyers'"):
        load_profile_rules(tmp_path)


def test_current_profile_rules_are_parsed_again_only_when_a_file_changes(tmp_path: Path) -> None:
    segment = write(tmp_path / "segments" / "buyers.yaml", BUYERS)
    write(tmp_path / "scoring" / "engagement.yaml", ENGAGEMENT)
    first = current_profile_rules(tmp_path)
    assert current_profile_rules(tmp_path)[0] is first[0]
    write(segment, BUYERS.replace("gte: 1", "gte: 2"))
    stat = segment.stat()
    os.utime(segment, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = current_profile_rules(tmp_path)
    assert changed[0] is not first[0]
    rule = changed[0][0].rule
    assert isinstance(rule, HasDoneCondition) and rule.has_done.count.gte == 2


def test_cairn_validate_lists_each_policy_problem_with_file_and_field(tmp_path: Path) -> None:
    from starter.cli.main import app

    write(tmp_path / "welcome.yaml", "key: welcome\nname: Welcome\ntrigger: {event: signup}\n"
                                     "steps:\n  mark: {score: {add: 1}, next: end}\n")
    policy = write(tmp_path / POLICY_FILE, "caps:\n  - {max: 0, per: 7d}\n  - {max: 1}\n")
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.startswith(f"{policy}: caps[0].max: ") for line in lines)
    assert any(line.startswith(f"{policy}: caps[1]: ") and "per" in line for line in lines)
    write(policy, "quiet_hours:\n  sms: {from: '21:00', to: '09:00'}\n")
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"OK {policy}: quiet hours on 1 channel(s), 0 cap(s)" in result.output
