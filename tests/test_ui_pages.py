"""The dashboard at /ui through FastAPI's TestClient: every page and JSON endpoint, 404s, pagination,
the explanations, live counters, experiments, and that looking never writes."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from _ui_shop import settings, ui_copy
from fusionrec.serving.app import create_app

KEY = "ui-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    store, model = ui_copy(tmp_path_factory.mktemp("ui"))
    application = create_app(model, store, settings(api_key=KEY))
    application.state.dashboard.delta_every = 0.0  # see live events at once
    yield application
    application.state.server.close()


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def state(app):
    return app.state.server


def _active_user(state) -> str:
    ranked = sorted(((len(state.histories.history(u) or []), u) for u in state.current.pipeline.users_.ids()
                     if u in state.histories.users), reverse=True)
    return [u for n, u in ranked if n < 300][0]


PAGES = ["/ui", "/ui/models", "/ui/users", "/ui/items", "/ui/items?q=a&page=2", "/ui/experiments", "/ui/shop",
         "/ui/shop?visitor=u000007", "/ui/shop/c/grocery?visitor=u000007"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders(client, path):
    r = client.get(path)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<html lang="en">' in html and "<h1" in html and 'name="viewport"' in html
    assert "internal error" not in html


def test_root_redirects_to_the_dashboard(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui"


def test_static_files_and_vendored_chart_library(client):
    js = client.get("/ui/static/vendor/chart.umd.min.js")
    assert js.status_code == 200 and "Chart.js v4" in js.text[:200]
    assert client.get("/ui/static/vendor/chart.js.LICENSE.md").status_code == 200
    assert client.get("/ui/static/ui.css").status_code == 200
    assert client.get("/ui/static/nope.js").status_code == 404
    html = client.get("/ui").text
    assert "cdn" not in html.lower() and "https://" not in html  # nothing from outside the server


def test_overview_shows_store_numbers_and_funnel(client, state):
    o = client.get("/ui/api/overview").json()
    n = state.store.count("events")
    assert o["events"] == n and o["users"] > 0 and o["items"] > 0 and 0 < o["density"] <= 1
    assert o["model_version"] == state.current.version
    assert [f["step"] for f in o["funnel"]] == ["view", "cart", "buy"]
    assert o["funnel"][1]["event_rate"] == pytest.approx(o["behaviors"]["cart"] / o["behaviors"]["view"])
    assert sum(sum(v) for v in o["chart"]["series"].values()) == n
    html = client.get("/ui").text
    assert f"{n:,}" in html and "chart-daily" in html and "conversion" in html


def test_live_counters_and_events_reach_the_overview(client, state):
    user = _active_user(state)
    before = client.get("/ui/api/overview").json()["events"]
    for _ in range(3):
        assert client.get(f"/recommendations/{user}", params={"k": 5}).status_code == 200
    r = client.post("/events", json=[{"user_id": user, "item_id": "i00003", "behavior": "view"}], headers=AUTH)
    assert r.json()["accepted"] == 1
    live = client.get("/ui/api/live").json()
    assert live["requests_total"] >= 4 and live["requests_per_second"] > 0 and live["events_total"] >= 1
    assert live["p99_ms"] is not None and live["p99_ms"] > 0
    after = client.get("/ui/api/overview").json()
    assert after["events"] == before + 1  # the live event, counted without a full rescan


def test_models_page_leaderboard_plots_and_importances(client, state):
    m = client.get("/ui/api/models").json()
    ev = m["evaluation"]
    assert m["evaluation_path"].endswith("evaluation.json")
    assert {r["model"] for r in ev["rows"]} == {"pop", "itemknn", "covisit", "fusion"}
    assert ev["k"] == [5, 10, 20] and set(ev["metric_vs_k"]) >= {"ndcg", "recall"}
    assert all(len(v) == 3 for v in ev["metric_vs_k"]["ndcg"].values())
    assert ev["tradeoff"] and all(p["x"] is not None for p in ev["tradeoff"])
    assert m["importances"] and abs(sum(g for _, g in m["importances"])) <= 1.0 + 1e-6
    html = client.get("/ui/models").text
    assert "fusion" in html and "chart-k" in html and "chart-tradeoff" in html and "chart-importance" in html
    assert re.search(r"\[0\.\d{4}, 0\.\d{4}\]", html)  # confidence intervals


def test_user_inspector_explains_with_history(client, state):
    user = _active_user(state)
    u = client.get(f"/ui/api/users/{user}").json()
    assert u["n_events"] > 0 and len(u["events"]) == min(50, u["n_events"])
    assert len(u["recommendations"]) == 10
    assert all(r["generators"] for r in u["recommendations"])
    because = [b for r in u["recommendations"] for b in r["because"]]
    assert because and all(b["in_history"] for b in because)
    assert u["variant"]["experiment"] == "ranker" and u["variant"]["variant"] in ("control", "candidate")
    html = client.get(f"/ui/users/{user}").text
    assert "history-item" in html and "because you" in html and "forget-form" in html


def test_user_pages_paginate_and_search(client, state):
    r = client.get("/ui/users", params={"q": "u000007"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/users/u000007"
    listing = client.get("/ui/api/users", params={"page": 2}).json()
    assert listing["page"] == 2 and len(listing["users"]) == 25
    user = state.histories.users.ids()[0]
    n = len(state.histories.history(user))
    if n > 50:
        assert client.get(f"/ui/users/{user}", params={"page": 2}).status_code == 200
    assert client.get("/ui/users", params={"page": 0}).status_code == 422


def test_unknown_user_and_item_are_404_not_500(client):
    for path in ("/ui/users/nobody-at-all", "/ui/items/no-such-item", "/ui/shop/p/no-such-item",
                 "/ui/shop/c/no-such-category"):
        r = client.get(path)
        assert r.status_code == 404 and "Not found" in r.text, path
    assert client.get("/ui/api/users/nobody-at-all").status_code == 404
    assert client.get("/ui/api/items/no-such-item").status_code == 404


def test_item_page(client, state):
    item = client.get("/ui/api/overview").json() and state.store.con.execute(
        "SELECT item_id FROM events WHERE behavior = 'buy' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    it = client.get(f"/ui/api/items/{item}").json()
    assert it["attributes"]["title"] and it["attributes"]["category"]
    assert it["days"] and sum(sum(v) for v in it["series"].values()) == it["events"] > 0
    sources = {s["source"] for s in it["similar"]}
    assert {"served", "itemknn", "covisit", "also_bought"} <= sources
    bought = next(s for s in it["similar"] if s["source"] == "also_bought")
    assert bought["items"] and item not in [x["item_id"] for x in bought["items"]]
    assert it["users"]["source"] == "als" and len(it["users"]["users"]) == 10
    html = client.get(f"/ui/items/{item}").text
    assert "Popularity over time" in html and "also bought" in html


def test_item_page_cached_and_direct_agree(app, state):
    """The cached per-item aggregates give what a direct scan of the store gives."""
    data = app.state.dashboard
    item = state.store.con.execute(  # one without live events: those are read apart from the aggregates
        "SELECT item_id FROM events WHERE behavior = 'buy' AND item_id NOT IN "
        "(SELECT item_id FROM events WHERE source = 'api') GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    data.summary()
    _, daily, bought = data._read(lambda con: data._item_direct(con, item, 8))
    cached_daily, cached_bought = data._item_cached(data.summary().agg, item, [], 8)
    assert sorted(daily) == sorted(cached_daily)
    assert bought == cached_bought


def test_pages_work_while_the_first_summary_runs(client, app, monkeypatch):
    from fusionrec.ui.queries import Summary

    monkeypatch.setattr(app.state.dashboard, "summary", lambda: Summary(pending=True))
    html = client.get("/ui").text
    assert "being computed" in html
    assert client.get("/ui/items/i00001").status_code == 200  # read straight from the store
    assert client.get("/ui/users").status_code == 200


def test_items_table_paginates_server_side(client):
    page1 = client.get("/ui/api/items", params={"page": 1}).json()
    page2 = client.get("/ui/api/items", params={"page": 2}).json()
    assert page1["total"] == 200 and len(page1["items"]) == 25
    assert not {i["item_id"] for i in page1["items"]} & {i["item_id"] for i in page2["items"]}
    html = client.get("/ui/items").text
    assert 'rel="next"' in html and "page 1 of 8" in html
    by_cat = client.get("/ui/api/items", params={"category": "grocery"}).json()
    assert by_cat["total"] > 0 and all(i["category"].startswith("grocery") for i in by_cat["items"])


def test_experiments_page(client, state):
    user = _active_user(state)
    items = client.get(f"/recommendations/{user}", params={"k": 5}).json()["items"]
    client.post("/events", json={"user_id": user, "item_id": items[0]["item_id"], "behavior": "click"}, headers=AUTH)
    reports = client.get("/ui/api/experiments").json()
    (rep,) = reports
    assert rep["name"] == "ranker" and sum(v["impressions"] for v in rep["variants"]) >= 1
    assert sum(v["clicks"] for v in rep["variants"]) >= 1
    assert rep["series"] and all(len(v["ctr_ci"]) == 2 for v in rep["variants"])
    assert rep["tests"] and rep["tests"][0]["summary"]
    html = client.get("/ui/experiments").text
    assert "ranker" in html and "exp-chart" in html and "significant" in html


def test_storefront_pages(client):
    html = client.get("/ui/shop/p/i00001", params={"visitor": "u000007"}).text
    assert 'id="btn-cart"' in html and 'id="btn-buy"' in html and "Customers also viewed" in html
    assert "Recommended for you" in html and 'data-item="i00001"' in html
    assert "/ui/static/shop.js" in html
    titles = client.get("/ui/api/items", params={"ids": "i00001,i00002,nope"}).json()["items"]
    assert set(titles) == {"i00001", "i00002"}


def test_looking_never_writes(client, state):
    """Pages read only: no events, no A/B impressions from viewing a user."""
    n = state.store.count("events")
    imps = sum(v["impressions"] for v in state.tracker.report("ranker")["variants"])
    user = _active_user(state)
    for path in PAGES + [f"/ui/users/{user}", "/ui/items/i00001", "/ui/shop/p/i00001?visitor=u000007"]:
        assert client.get(path).status_code == 200
    assert state.store.count("events") == n
    assert sum(v["impressions"] for v in state.tracker.report("ranker")["variants"]) == imps


def test_a_forgotten_user_disappears_from_the_dashboard(client, state):
    victim = client.get("/ui/api/users").json()["users"][-1]["user_id"]
    assert client.get(f"/ui/users/{victim}").status_code == 200
    assert client.delete(f"/users/{victim}", headers=AUTH).status_code == 200
    assert client.get(f"/ui/users/{victim}").status_code == 404
    assert victim not in [u["user_id"] for u in client.get("/ui/api/users").json()["users"]]


def test_admin_actions_need_the_key(client):
    assert client.post("/admin/retrain").status_code in (401, 403)
    assert client.delete("/users/u000007").status_code in (401, 403)
    assert client.post("/admin/retrain", headers={"Authorization": "Bearer wrong"}).status_code == 403


def test_evaluation_json_carries_the_fused_pipelines_fit_report():
    import json

    from _ui_shop import evaluation

    models = json.loads(evaluation())["models"]
    report = models["fusion"]["fit_reports"][0]
    from fusionrec.pipeline import DEFAULT_GENERATORS

    assert report["holdout"].startswith("time")  # the shop has timestamps: the last days label the ranker
    assert set(report["valid_ndcg@20_per_generator"]) == set(DEFAULT_GENERATORS)
    assert ("ranker_guard" in report) or report["ranker_gain_heldout"]["p"] < 0.05  # kept only when significant
    assert "fit_reports" not in models["pop"]  # generators without a report add nothing
