"""Record the workflow histories that `tests/test_replay.py` replays.

    python tests/histories/record.py            # every recording
    python tests/histories/record.py loop waits  # some of them

Each recording is a journey and a scenario; together they visit every step kind (waits of each
sort, `wait_for_event` met and timed out, `if` with every condition, `split`, every action, `end`
with an outcome, a loop that continues as new, an exit goal, a send held by quiet hours, a
condition on a caught event, an update computed with Liquid, waits that keep their rhythm). The
simulation runs on a time-skipping server of its own; each run of the workflow is saved as
`<name>.json` (first run) and `<name>-run<N>.json` (runs after a continue-as-new).

Run it only after an intentional change to the interpreter that running journeys can live with,
and review the diff: the point of the saved histories is that they were made by the older code.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
# Saved histories must replay anywhere: recorded in clear, not under a simulation's throwaway keys.
os.environ["CAIRN_PAYLOAD_ENCRYPTION"] = "false"

from cairn.journey_files import load_journey  # noqa: E402
from cairn.log import configure, get_logger  # noqa: E402
from starter.testing import Simulator, load_scenario  # noqa: E402

log = get_logger("record")


@dataclass(frozen=True)
class Recording:
    """A journey, the scenario played against it, and the outcome that proves it went as meant."""

    journey: Path
    scenario: Path
    outcome: str
    visits: tuple[str, ...] = ()
    first_send_at: str | None = None


RECORDINGS: dict[str, Recording] = {
    "waits": Recording(HERE / "journeys/waits.yaml", HERE / "scenarios/waits.yaml", "completed",
                       ("pause", "day_before_due", "office_hours", "fixed_date")),
    "events": Recording(HERE / "journeys/events.yaml", HERE / "scenarios/events.yaml",
                        "ended:no_admin", ("await_project", "await_admin", "no_admin")),
    "branches": Recording(HERE / "journeys/branches.yaml", HERE / "scenarios/branches.yaml", "",
                          ("by_attribute", "by_score", "by_property", "by_segment", "by_history",
                           "by_reach", "combined", "ab")),
    "actions": Recording(HERE / "journeys/actions.yaml", HERE / "scenarios/actions.yaml",
                         "completed", ("welcome", "add_points", "tag", "enrich", "alert", "call",
                                       "retarget", "hand_off")),
    "loop": Recording(HERE / "journeys/loop.yaml", HERE / "scenarios/loop.yaml", "waiting",
                      ("monthly", "remind", "monthly", "remind", "monthly")),
    "cart-converted": Recording(ROOT / "journeys/cart-abandonment.yaml",
                                HERE / "scenarios/cart-converted.yaml", "converted", ("wait_2h",)),
    "cart-quiet-hours": Recording(ROOT / "journeys/cart-abandonment.yaml",
                                  HERE / "scenarios/cart-quiet-hours.yaml", "completed",
                                  ("wait_2h", "still_in_cart", "push_or_email", "push_reminder",
                                   "email_reminder"), first_send_at="2026-03-03T06:00:00Z"),
    "answers": Recording(HERE / "journeys/answers.yaml", HERE / "scenarios/answers.yaml",
                         "completed", ("wait_answer", "happy", "move_due", "pause", "again")),
    # The lean sequence of commands (`workflows.run.LEAN_RUN_PATCH`): the recordings above were
    # made before it and are kept as they are; these record the same journeys as lean runs.
    "lean-cart-quiet-hours": Recording(
        ROOT / "journeys/cart-abandonment.yaml", HERE / "scenarios/cart-quiet-hours.yaml",
        "completed", ("wait_2h", "still_in_cart", "push_or_email", "push_reminder",
                      "email_reminder"), first_send_at="2026-03-03T06:00:00Z"),
    "lean-actions": Recording(HERE / "journeys/actions.yaml", HERE / "scenarios/actions.yaml",
                              "completed", ("welcome", "add_points", "tag", "enrich", "alert",
                                            "call", "retarget", "hand_off")),
    "lean-loop": Recording(HERE / "journeys/loop.yaml", HERE / "scenarios/loop.yaml", "waiting",
                           ("monthly", "remind", "monthly", "remind", "monthly")),
}
"""Name -> recording. An empty `outcome` accepts any (the split's path depends on the contact)."""


class RecordingMismatch(RuntimeError):
    """A simulation did not go as the recording expects, so its history would not cover what it
    claims to; fix the journey, the scenario or the expectation before saving."""


async def record(names: list[str]) -> list[Path]:
    written: list[Path] = []
    async with Simulator.start() as simulator:
        for name in names:
            recording = RECORDINGS[name]
            report = await simulator.run(load_journey(recording.journey),
                                         load_scenario(recording.scenario), keep_histories=True)
            bound = log.bind(recording=name, outcome=report.outcome, steps=report.steps)
            if recording.outcome and report.outcome != recording.outcome:
                raise RecordingMismatch(
                    f"{name}: outcome {report.outcome!r}, expected {recording.outcome!r}; "
                    f"path: {[(p.step, p.note) for p in report.path]}"
                )
            if tuple(report.steps[: len(recording.visits)]) != recording.visits:
                raise RecordingMismatch(f"{name}: path {report.steps}, expected it to start with "
                                        f"{list(recording.visits)}")
            sends = report.model_dump(mode="json")["sends"]
            if recording.first_send_at and (not sends or sends[0]["at"] != recording.first_send_at):
                raise RecordingMismatch(f"{name}: sends {sends}, expected the first at "
                                        f"{recording.first_send_at}")
            for old in HERE.glob(f"{name}*.json"):
                if old.stem == name or old.stem.startswith(f"{name}-run"):
                    old.unlink()
            (runs,) = report.histories.values()
            for number, history in enumerate(runs, start=1):
                path = HERE / (f"{name}.json" if number == 1 else f"{name}-run{number}.json")
                path.write_text(history.to_json() + "\n", encoding="utf-8")
                written.append(path)
            bound.info("recorded", runs=len(runs))
    return written


def main() -> None:
    configure("INFO")
    names = sys.argv[1:] or list(RECORDINGS)
    unknown = sorted(set(names) - set(RECORDINGS))
    if unknown:
        log.error("unknown recordings", unknown=unknown, known=sorted(RECORDINGS))
        code = 2
    else:
        try:
            written = asyncio.run(record(names))
        except RecordingMismatch as error:
            log.error("recording.mismatch", error=str(error))
            code = 1
        else:
            log.info("done", files=[str(p.relative_to(ROOT)) for p in written])
            code = 0
    sys.stdout.flush()
    sys.stderr.flush()
    # Temporal's runtime may abort while the interpreter finalizes; leave with the real status.
    os._exit(code)


if __name__ == "__main__":
    main()
