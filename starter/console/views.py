"""What the console's templates are given: small pieces of presentation, no queries.

A trend (entries and conversions per day) as inline SVG polylines, rates as percentages, an
experiment's significance in words, a pydantic model (or any list of them) flattened into table
rows so that figures a newer report carries show without a template change, and links into the
Temporal UI.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup
from pydantic import BaseModel

WINDOWS = {"7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90),
           "all": None}
"""The windows a journey page offers (entries entered within the last ...)."""


def window_start(window: str, now: datetime) -> datetime | None:
    span = WINDOWS.get(window, WINDOWS["30d"])
    return now - span if span is not None else None


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def signed_percent(value: float | None) -> str:
    """An uplift: `+25.0%`, `-12.5%`."""
    return "-" if value is None else f"{value:+.1%}"


def significance(p_value: float | None, confidence: float) -> str:
    """Whether an arm differs from the control at the experiment's confidence (the p-value of
    the two-proportion test below 1 - confidence)."""
    if p_value is None:
        return "-"
    alpha = 1 - confidence
    return f"yes (p < {alpha:.2g})" if p_value < alpha else f"no (p ≥ {alpha:.2g})"


def sparkline(days: Sequence[Any], width: int = 120, height: int = 28) -> str:
    """A small inline SVG of entries and conversions per day (`cairn.journey_trends.DayFigures`:
    `.entries`, `.conversions`), both on the entries' scale; no script, no external file."""
    if not days:
        return ""
    top = max(d.entries for d in days) or 1
    step = width / max(len(days) - 1, 1)

    def line(values: list[int]) -> str:
        return " ".join(f"{i * step:.1f},{height - 2 - (n / top) * (height - 4):.1f}"
                        for i, n in enumerate(values))

    entries = sum(d.entries for d in days)
    conversions = sum(d.conversions for d in days)
    label = (f"entries and conversions per day, last {len(days)} days: {entries} entries "
             f"(at most {top} a day), {conversions} conversions")
    return (f'<svg class="trend" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
            f' role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>'
            f'<polyline class="entries" points="{line([d.entries for d in days])}"/>'
            f'<polyline class="conversions" points="{line([d.conversions for d in days])}"/>'
            "</svg>")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A model or mapping as one flat row: nested fields joined by dots (`rates.open`)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if not isinstance(value, dict):
        return {prefix or "value": value}
    row: dict[str, Any] = {}
    for key, inner in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(inner, dict | BaseModel):
            row.update(flatten(inner, name))
        else:
            row[name] = inner
    return row


def table(rows: Iterable[Any]) -> tuple[list[str], list[list[str]]]:
    """(columns, cells) of a list of models: every field of every row, in first-seen order."""
    flat = [flatten(row) for row in rows]
    columns = list(dict.fromkeys(column for row in flat for column in row))
    return columns, [[cell(row.get(c)) for c in columns] for row in flat]


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    return str(value)


def sections(report: BaseModel, known: set[str]) -> list[tuple[str, Markup]]:
    """The report's fields not drawn elsewhere (e.g. `experiments`), each as HTML that shows
    every figure: a model as name/value pairs, a list of models as a table, nested as deep as
    the model is (an experiment's arms inside the experiment)."""
    return [(name, figures_html(value)) for name, value in report
            if name not in known and isinstance(value, list | dict | BaseModel) and value]


def figures_html(value: Any) -> Markup:
    """Any figures as escaped HTML, read generically from the model's fields."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{figures_html(v)}</td></tr>"
                       for k, v in value.items())
        return Markup(f'<table class="pairs">{rows}</table>')
    if isinstance(value, list) and value and all(isinstance(v, dict | BaseModel)
                                                 for v in value):
        items = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        columns = list(dict.fromkeys(k for item in items for k in item))
        head = "".join(f"<th>{escape(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{figures_html(item.get(c))}</td>"
                                        for c in columns) + "</tr>" for item in items)
        return Markup(f'<table class="figures"><thead><tr>{head}</tr></thead>'
                      f"<tbody>{body}</tbody></table>")
    return Markup(escape(cell(value)))


def runs_link(ui: str, namespace: str, journey: str) -> str:
    """The Temporal UI's list of a journey's runs (a visibility query by `CairnJourney`)."""
    query = urlencode({"query": f'CairnJourney="{journey}"'})
    return f"{ui}/namespaces/{quote(namespace, safe='')}/workflows?{query}"


def run_link(ui: str, namespace: str, workflow_id: str) -> str:
    return f"{ui}/namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"


def contact_runs_link(ui: str, namespace: str, contact: str) -> str:
    query = urlencode({"query": f'CairnContact="{contact}"'})
    return f"{ui}/namespaces/{quote(namespace, safe='')}/workflows?{query}"


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
