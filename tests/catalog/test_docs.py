"""Every journey of the catalog has its page under docs/journeys/, and the graph on the page is
the one `cairn graph` draws from the definition today (a page cannot drift from its journey).

To redraw every page's graph after changing journeys: `python tests/catalog/test_docs.py`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from cairn.graph import mermaid
from cairn.journey_files import journey_files, load_journey

ROOT = Path(__file__).resolve().parents[2]
JOURNEYS = journey_files(ROOT / "journeys")
BLOCK = re.compile(r"```mermaid\n(.*?)```", re.DOTALL)


def test_the_catalog_holds_every_seed_journey() -> None:
    assert len(JOURNEYS) >= 27


@pytest.mark.parametrize("path", JOURNEYS, ids=lambda p: p.stem)
def test_each_journey_has_a_page_with_its_current_graph(path: Path) -> None:
    journey = load_journey(path)
    page = ROOT / "docs" / "journeys" / f"{journey.key}.md"
    assert page.is_file(), f"no docs page for {journey.key}: write {page.relative_to(ROOT)}"
    text = page.read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    assert blocks, f"{page.name} has no ```mermaid block"
    assert mermaid(journey) in blocks, (
        f"{page.name}: the graph differs from `cairn graph {path.name}`; redraw it with "
        "`python tests/catalog/test_docs.py`")


def redraw() -> None:
    """Replace the first mermaid block of every page with the current graph."""
    for path in JOURNEYS:
        journey = load_journey(path)
        page = ROOT / "docs" / "journeys" / f"{journey.key}.md"
        if not page.is_file():
            print(f"missing {page}")
            continue
        text = page.read_text(encoding="utf-8")
        block = f"```mermaid\n{mermaid(journey)}```"
        drawn = BLOCK.sub(lambda _: block, text, count=1)  # noqa: B023 (used at once)
        if drawn != text:
            page.write_text(drawn, encoding="utf-8")
            print(f"redrew {page.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    redraw()
