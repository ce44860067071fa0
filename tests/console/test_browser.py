"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against a
`cairn dev`-like set-up (real router, workers and Temporal's test server, the catalog's
cart-abandonment and form-reply journeys, simulated traffic: `starter.console.screenshots`, which
takes the documentation's screenshots the same way), served by uvicorn on loopback.

Log in, open the journey and read the numbers on its graph, open a contact and its timeline,
claim and complete a task; no JavaScript error, no request leaving loopback. Slow (a browser and
a Temporal server): marked `browser`, about 20 s. Without Chromium the test skips on a laptop and
fails in CI (`CI` set): `.ci/run` installs it and sets CAIRN_TEST_CHROMIUM.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from temporalio.testing import WorkflowEnvironment

from cairn.events.ingest import Ingest
from cairn.journey_run import JourneyResult, workflow_id
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app
from starter.console.screenshots import (
    CHROMIUM_ARGS,
    SMALL,
    publish_demo_journeys,
    serving,
    simulate_traffic,
)
from tests.api_support import new_key
from tests.engine_support import engine, events_named

CATALOG = Path(__file__).resolve().parents[2] / "journeys"
CHROMIUM_VARIABLE = "CAIRN_TEST_CHROMIUM"


def _chromium() -> tuple[str | None, str | None]:
    """(Debian's Chromium, None) or (None, what is missing to drive it)."""
    path = os.environ.get(CHROMIUM_VARIABLE) or shutil.which("chromium")
    if not path or not Path(path).exists():
        return None, (f"no Chromium (not at ${CHROMIUM_VARIABLE}, none on PATH): "
                      "apt-get install -y chromium chromium-driver")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return None, "playwright is not installed: pip install -e \".[dev]\""
    return path, None


CHROMIUM, MISSING = _chromium()

# On a laptop without Chromium the browser test is not run; in CI (`CI` set, as .ci/run does)
# it always runs and fails if Chromium is missing.
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(MISSING is not None and not os.environ.get("CI"),
                                 reason=f"{MISSING} (CI runs it)")]


def chromium() -> str:
    """Debian's Chromium; the test fails, naming what is missing, when there is none."""
    if CHROMIUM is None:
        pytest.fail(f"CI must run the browser tests: {MISSING}")
    return CHROMIUM


async def test_an_operator_logs_in_reads_the_graph_opens_a_contact_and_works_a_task(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, tmp_path: Path,
) -> None:
    executable = chromium()
    from playwright.async_api import async_playwright

    store = sqlite_store
    start = await temporal_env.get_current_time()
    await publish_demo_journeys(store, CATALOG, start)
    clock = {"now": start}
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router, clock=lambda: clock["now"])
        await simulate_traffic(temporal_env, ingest, clock, SMALL)
        for name in SMALL.everyone:
            handle = temporal_env.client.get_workflow_handle(
                workflow_id("cart-abandonment", name), result_type=JourneyResult)
            assert (await handle.result()).outcome == (
                "converted" if name in SMALL.converts else "completed")
        settings = Settings(database_url=store.url, secret_key="browser-test",
                            temporal_ui_url="http://127.0.0.1:9/ui")
        app = create_app(store, ingest, settings=settings)
        admin = await new_key(store, "admin", name="operator")
        async with serving(app) as base, async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=executable, headless=True,
                args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
            left_loopback: list[str] = []
            errors: list[str] = []

            async def only_loopback(route: Any) -> None:
                if urlsplit(route.request.url).netloc != urlsplit(base).netloc:
                    left_loopback.append(route.request.url)
                    await route.abort()
                else:
                    await route.continue_()

            await context.route("**/*", only_loopback)
            page = context.pages[0] if context.pages else await context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
            try:
                # Nothing without a session: the login page.
                await page.goto(f"{base}/console/journeys/cart-abandonment")
                assert "/console/login" in page.url
                await page.fill("input[name=key]", admin)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{base}/console/journeys/cart-abandonment")

                # The graph with the right numbers (6 entered, 2 converted, 4 completed).
                async def figures(node: str) -> list[str]:
                    return await page.locator(
                        f'svg.journey-graph g.node[data-node="{node}"] text.figure'
                    ).all_text_contents()

                async def edge(source: str, target: str) -> list[str]:
                    return await page.locator(
                        f'svg.journey-graph g.edge[data-from="{source}"][data-to="{target}"]'
                        " text.edge-label").all_text_contents()

                assert await figures("__trigger__") == ["6 entered · 0 active"]
                assert await figures("goal:converted") == ["2 converted (33.3%)"]
                assert await figures("__end__") == ["4 completed"]
                # Per step, from the step transitions the runs wrote: Ana and Bob converted in
                # the wait, Dan got the push, Flo, Gus and Joe (no consent) the email step.
                assert await figures("wait_2h") == ["6 reached · 0 waiting",
                                                    "exited: converted 2"]
                assert await figures("push_or_email") == ["4 reached · 0 waiting"]
                assert await figures("email_reminder") == ["4 reached · 0 waiting",
                                                           "email: 3 sent, 1 skipped"]
                assert await figures("push_reminder") == ["1 reached · 0 waiting",
                                                          "push: 1 sent"]
                assert await edge("__trigger__", "wait_2h") == ["6 entered"]
                assert await edge("wait_2h", "still_in_cart") == ["4 left"]
                assert await edge("still_in_cart", "__end__") == ["else · 0 left"]
                assert await edge("push_or_email", "push_reminder") == ["then · 1 left"]
                assert await edge("push_or_email", "email_reminder") == ["else · 3 left"]
                assert await edge("email_reminder", "__end__") == ["4 left"]
                box = await page.locator('g.node[data-node="email_reminder"]').bounding_box()
                assert box and box["width"] > 100  # drawn, not just present
                assert await page.locator("#temporal-runs").get_attribute("href") == (
                    "http://127.0.0.1:9/ui/namespaces/default/workflows?"
                    "query=CairnJourney%3D%22cart-abandonment%22")
                await page.click('g.node[data-node="email_reminder"]')  # the page's script
                assert await page.locator("g.edge.lit").count() == 3

                # The journeys list.
                await page.click("nav >> text=Journeys")
                row = page.locator('tr[data-journey="cart-abandonment"]')
                assert await row.locator('[data-figure="entries-7d"]').text_content() == "6"
                assert await row.locator('[data-figure="conversion-7d"]').text_content() == (
                    "33.3%")

                # A contact and its timeline: Joe's reminder did not go, and why.
                await page.click("nav >> text=Contacts")
                await page.fill("input[name=id]", "joe")
                await page.click("button[type=submit] >> text=Open")
                await page.wait_for_url(f"{base}/console/contacts/joe")
                skipped = page.locator('#timeline li[data-status="skipped:consent"]')
                assert "no consent" in (await skipped.locator(".reason").text_content() or "")
                kinds = await page.locator("#timeline li").evaluate_all(
                    "items => items.map(i => i.dataset.kind)")
                assert {"event", "entry", "exit", "step", "message"} <= set(kinds)

                # A task: claim it, then complete it; its journey hears task_completed.
                await page.click("nav >> text=Tasks")
                task = page.locator("#tasks tr[data-status=open]")
                assert await task.count() == 1
                assert "Reply to Kim" in (await task.text_content() or "")
                await task.locator("input[name=assignee]").fill("maria@sales")
                await task.locator("button[name=claim]").click()
                await page.wait_for_selector("#tasks tr[data-status=claimed]")
                claimed = page.locator("#tasks tr[data-status=claimed]")
                assert "maria@sales" in (await claimed.text_content() or "")
                await claimed.locator("input[name=outcome]").fill("replied")
                await claimed.locator("button[name=complete]").click()
                await page.wait_for_selector("#tasks tr[data-status=done]")
                await page.screenshot(path=str(tmp_path / "tasks.png"))
            finally:
                await context.close()
        assert errors == []
        assert left_loopback == []
        completed = await events_named(store, "task_completed", "kim")
        assert [e.properties["outcome"] for e in completed] == ["replied"]
