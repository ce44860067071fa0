"""Look at a run in `cairn dev`'s Temporal UI with headless Chromium, as an operator would.

Not a test (it needs Debian's chromium and the `playwright` package in your venv, neither a
dependency of Cairn): it is how the screenshots beside it were taken. With `cairn dev` running
and the README tour's identify + cart_item_added sent:

    python docs/security/check_temporal_ui.py http://localhost:8233 \
        journey/cart-abandonment/c-1 out/

It opens the run's Event History, waits until the UI has shown the decoded input (the journey
definition, through the API's `/codec/decode`) or the `erased` marker, prints how many codec
calls the UI made and what it answered, and saves `temporal-ui-history.png` in the folder given.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from urllib.parse import quote

from playwright.async_api import Response, async_playwright

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DECODED = ('"key": "cart-abandonment"', '"erased": true')


async def look(ui: str, workflow_id: str, out: Path) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 1100})
        answers: list[int] = []

        def on_response(response: Response) -> None:
            if "/codec/decode" in response.url:
                answers.append(response.status)

        page.on("response", on_response)
        # the UI polls a running workflow, so "network idle" never comes: wait for the text
        await page.goto(f"{ui}/namespaces/default/workflows/{quote(workflow_id, safe='')}",
                        wait_until="load", timeout=60000)
        await page.get_by_text("Event History", exact=False).first.click()
        body = ""
        for _ in range(60):
            body = await page.inner_text("body")
            if any(marker in body for marker in DECODED):
                break
            await page.wait_for_timeout(1000)
        await page.get_by_text("Workflow Execution Started").first.click()
        await page.wait_for_timeout(2000)
        out.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(out / "temporal-ui-history.png"))
        print(f"codec decode calls: {len(answers)}, answers {sorted(set(answers))}")
        for marker in (*DECODED, "binary/encrypted"):
            print(f"{marker!r} shown: {marker in body}")
        await browser.close()


if __name__ == "__main__":
    asyncio.run(look(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
