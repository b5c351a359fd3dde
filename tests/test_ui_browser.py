"""The dashboard in a real browser: Playwright drives Debian's headless Chromium against uvicorn on loopback.

Every page must load without a console error, an uncaught exception, a failed request or an HTTP error;
the storefront's buy must change "Recommended for you" and drop the bought item from it; the user
inspector's explanation must name an item from the user's history.
"""

from __future__ import annotations

import pytest

from _ui_shop import settings, ui_copy
from fusionrec.ui.browser import CHROMIUM, launch_chromium, running_server

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store, model = ui_copy(tmp_path_factory.mktemp("ui-browser"))
    from fusionrec.serving.app import create_app

    app = create_app(model, store, settings())  # no key: loopback writes only, as in the demo
    with running_server(app) as base:
        yield base, app.state.server


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


class Watched:
    """A page that records every console error, page error, failed request and HTTP error response."""

    def __init__(self, browser, width: int = 1280) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def _failed(self, request) -> None:
        # a poll still in flight when the test moves to the next page is cut off by the navigation
        if "ERR_ABORTED" in (request.failure or "") and "/ui/api/" in request.url:
            return
        self.problems.append(f"failed: {request.url} {request.failure}")

    def close(self) -> None:
        self.context.close()


def _active_user(state) -> str:
    ranked = sorted(((len(state.histories.history(u) or []), u) for u in state.current.pipeline.users_.ids()
                     if u in state.histories.users), reverse=True)
    return [u for n, u in ranked if n < 300][1]


def _rec_ids(page) -> list[str]:
    return page.eval_on_selector_all("#recs li.tile", "els => els.map(e => e.dataset.item)")


def test_every_page_loads_without_errors(server, browser):
    base, state = server
    user = _active_user(state)
    item = state.current.item_ids[0]
    pages = ["/ui", "/ui/models", "/ui/users", f"/ui/users/{user}", "/ui/items", f"/ui/items/{item}",
             "/ui/experiments", "/ui/shop", f"/ui/shop?visitor={user}", f"/ui/shop/c/grocery?visitor={user}",
             f"/ui/shop/p/{item}?visitor={user}"]
    w = Watched(browser)
    try:
        for path in pages:
            w.page.goto(base + path, wait_until="load")
            w.page.wait_for_load_state("networkidle")
            assert w.page.locator("h1").first.is_visible(), path
            charts = w.page.locator("canvas")
            for i in range(charts.count()):  # Chart.js drew into every canvas
                assert charts.nth(i).evaluate("c => !!window.Chart && !!Chart.getChart(c)"), f"{path} canvas {i}"
        assert not w.problems, "\n".join(w.problems)
    finally:
        w.close()


def test_storefront_buy_updates_recommendations(server, browser):
    base, state = server
    user = _active_user(state)
    w = Watched(browser)
    page = w.page
    try:
        page.goto(f"{base}/ui/shop?visitor={user}")
        page.wait_for_selector("#recs[data-state=ready] li.tile")
        before = _rec_ids(page)
        assert len(before) == 8
        page.locator("#recs a.product-link").first.click()  # a click event, then the product page
        page.wait_for_url(f"**/ui/shop/p/{before[0]}**")
        page.wait_for_selector("#recs[data-state=ready] li.tile")
        page.wait_for_selector("#also[data-state=ready] li.tile")
        product = page.get_attribute("#product", "data-item")
        assert product == before[0]
        page.click("#btn-cart")
        page.wait_for_function("document.getElementById('shop-status').textContent.startsWith('Added to the cart')")
        assert page.text_content("#cart-count") == "1"
        shown = page.get_attribute("#recs", "data-version")
        page.click("#btn-buy")
        page.wait_for_function("document.getElementById('shop-status').textContent.startsWith('Bought')")
        page.wait_for_function(f"document.getElementById('recs').dataset.version !== '{shown}'")
        after = _rec_ids(page)
        assert len(after) == 8 and after != before
        assert product not in after
        assert page.text_content("#cart-count") == "0"
        stored = state.store.con.cursor().execute(
            "SELECT behavior FROM events WHERE user_id = ? AND item_id = ? AND source = 'api' ORDER BY seq",
            [user, product]).fetchall()
        assert [b for (b,) in stored] == ["click", "view", "cart", "buy"]
        assert not w.problems, "\n".join(w.problems)
    finally:
        w.close()


def test_user_inspector_names_a_history_item(server, browser):
    base, state = server
    user = _active_user(state)
    w = Watched(browser, width=390)  # a phone-sized screen
    page = w.page
    try:
        page.goto(f"{base}/ui/users")
        page.fill("#user-q", user)
        page.click("form[role=search] button")
        page.wait_for_url(f"**/ui/users/{user}")
        links = page.locator("#user-recs a.history-item")
        assert links.count() > 0
        named = links.first.text_content()
        history = set(state.histories.item_ids(state.histories.history(user).items))
        assert named in history
        assert "because you" in page.locator("#user-recs").text_content()
        # usable on a narrow screen: the page does not scroll sideways
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert not w.problems, "\n".join(w.problems)
    finally:
        w.close()
