"""`cairn validate FOLDER` also checks segments, scoring, geofences and the triggers naming them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from starter.cli.app import app

JOURNEY = """\
key: welcome-buyers
name: Welcome buyers
trigger: {segment_entered: buyers}
steps:
  mark: {score: {add: 1}, next: end}
"""


def folder_with(tmp_path: Path, segment: str) -> Path:
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "buyers.yaml").write_text(segment)
    (tmp_path / "welcome.yaml").write_text(JOURNEY)
    return tmp_path


def test_a_valid_folder_lists_its_segments(tmp_path: Path) -> None:
    folder = folder_with(
        tmp_path,
        "key: buyers\nname: Buyers\nrule: {has_done: {event: purchase, count: {gte: 1}}}\n",
    )
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 0, result.output
    assert "1 segment(s)" in result.output


def test_a_broken_segment_file_is_named(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "key: buyers\nname: Buyers\nrule: {attribute: x}\n")
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 1
    assert "buyers.yaml" in result.output


def test_a_trigger_naming_an_unknown_segment_is_a_problem(tmp_path: Path) -> None:
    folder = folder_with(
        tmp_path, "key: vip\nname: VIP\nrule: {score: global, gte: 40}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 1
    assert "trigger.segment_entered: unknown segment 'buyers'" in result.output
