"""Date arithmetic for Liquid: `add_days`, `add_months`, `add_years` on ISO dates.

Journeys move dates (a due date one month on after a payment, a trial end 14 days after the
start) in `update` values, and say them in messages ("your next instalment is due on ..."): both
Liquid environments register these filters, so the two agree on every calendar edge (31 January +
1 month = 28 February).
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta
from typing import Any

from liquid.exceptions import FilterArgumentError
from liquid.filter import liquid_filter
from liquid.undefined import is_undefined


def _moment(value: Any, name: str) -> date | datetime | None:
    """The date or date-time a filter shifts; None for a missing value (it renders nothing)."""
    if is_undefined(value) or value is None or value == "":
        return None
    if isinstance(value, date):  # datetime is a date too
        return value
    text = str(value).strip()
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError:
        raise FilterArgumentError(
            f"{name}: {value!r} is not an ISO date (2026-01-31) or date-time "
            "(2026-01-31T10:00:00Z)", token=None,
        ) from None


def _amount(value: Any, name: str) -> int:
    """How many days, months or years to add: a whole number, negative to go back."""
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return int(str(value).strip())
    except ValueError:
        raise FilterArgumentError(f"{name}: the amount must be a whole number, got {value!r}",
                                  token=None) from None


def _written(moment: date | datetime, original: Any) -> str:
    """The shifted moment in the form it came in (`Z` stays `Z`)."""
    text = moment.isoformat()
    if isinstance(original, str) and original.strip().endswith("Z") and text.endswith("+00:00"):
        text = text[: -len("+00:00")] + "Z"
    return text


def _shift_months(moment: date | datetime, months: int) -> date | datetime:
    years, month_index = divmod(moment.month - 1 + months, 12)
    year, month = moment.year + years, month_index + 1
    if not 1 <= year <= 9999:
        raise FilterArgumentError(f"shifting {moment.isoformat()} by {months} months leaves the "
                                  "calendar", token=None)
    return moment.replace(year=year, month=month,
                          day=min(moment.day, calendar.monthrange(year, month)[1]))


@liquid_filter
def add_days(value: Any, days: Any) -> str:
    """`{{ contact.trial_started | add_days: 14 }}`: the date `days` days later (or earlier)."""
    moment = _moment(value, "add_days")
    if moment is None:
        return ""
    try:
        return _written(moment + timedelta(days=_amount(days, "add_days")), value)
    except OverflowError as error:
        raise FilterArgumentError(f"add_days: {error}", token=None) from error


@liquid_filter
def add_months(value: Any, months: Any) -> str:
    """`{{ contact.emi_due_date | add_months: 1 }}`: the same day `months` months on, or the last
    day of a shorter month (31 January + 1 month = 28 February)."""
    moment = _moment(value, "add_months")
    if moment is None:
        return ""
    return _written(_shift_months(moment, _amount(months, "add_months")), value)


@liquid_filter
def add_years(value: Any, years: Any) -> str:
    """`{{ contact.renewal_date | add_years: 1 }}`: 29 February becomes the 28th."""
    moment = _moment(value, "add_years")
    if moment is None:
        return ""
    return _written(_shift_months(moment, 12 * _amount(years, "add_years")), value)


DATE_FILTERS = {"add_days": add_days, "add_months": add_months, "add_years": add_years}
