"""The HTTP API through FastAPI's TestClient: the contract's shapes, the live feedback loop, fallbacks,
auth, input limits and nasty inputs, forgetting a user, metrics."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from _serving_shop import fresh_copy
from fusionrec.serving.app import create_app
from fusionrec.serving.events import store_reader
from fusionrec.serving.forget import pseudonym
from fusionrec.serving.settings import ServingSettings
from fusionrec.store.event_store import EventStore

KEY = "s3cret-api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    store, model = fresh_copy(tmp_path_factory.mktemp("api"))
    application = create_app(model, store, ServingSettings(api_key=KEY,
                                                           reload_poll_seconds=None))
    yield application
    application.state.server.close()


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def state(app):
    return app.state.server


def _active_user(state, rank: int = 0) -> str:
    """A user the model knows, with a long history (not a bot)."""
    with_counts = sorted(((len(state.histories.history(u) or []), u) for u in state.current.pipeline.users_.ids()
                          if u in state.histories.users), reverse=True)
    return [u for n, u in with_counts if n < 300][rank]


def _ids(answer: dict) -> list[str]:
    return [it["item_id"] for it in answer["items"]]


# -- the contract's shapes ---------------------------------------------------------------------------

def test_health_names_the_version(client, state):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model_version"] == state.current.version and body["model_loaded"]


def test_recommendations_have_scores_and_reasons(client, state):
    user = _active_user(state)
    r = client.get(f"/recommendations/{user}", params={"k": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == user and body["model_version"] == state.current.version
    assert len(body["items"]) == 7
    scores = [it["score"] for it in body["items"]]
    assert all(isinstance(s, float) for s in scores)
    reasons = [r for it in body["items"] for r in it["reasons"]]
    assert any(r["type"] == "generator" and r["rank"] >= 1 for r in reasons)
    history = set(state.histories.item_ids(state.histories.history(user).items))
    because = [r for r in reasons if r["type"] == "history"]
    assert because and all(r["item_id"] in history and r["text"].startswith("because you ") for r in because)


def test_request_filters_category_exclude_price(client, state):
    user = _active_user(state)
    first = _ids(client.get(f"/recommendations/{user}", params={"k": 5}).json())
    again = _ids(client.get(f"/recommendations/{user}", params={"k": 5, "exclude": ",".join(first[:2])}).json())
    assert not set(first[:2]) & set(again)
    cat = state.histories.catalogue
    top = cat.category_names[0].split("/")[0]
    only = client.get(f"/recommendations/{user}", params={"k": 5, "category": top}).json()
    assert only["items"]
    for it in only["items"]:
        code = state.histories.item_code(it["item_id"])
        assert cat.category_names[cat.category[code]].startswith(top)
    cheap = client.get(f"/recommendations/{user}", params={"k": 5, "price_max": 10}).json()
    assert all(not (cat.price[state.histories.item_code(it["item_id"])] > 10) for it in cheap["items"])


def test_session_recommendations_follow_the_viewed_items(client, state):
    item = state.current.item_ids[3]
    body = client.post("/recommendations/session", json={"items": [item], "k": 5}).json()
    assert body["user_id"] is None and len(body["items"]) == 5 and item not in _ids(body)
    assert any(r.get("item_id") == item for it in body["items"] for r in it["reasons"] if r["type"] == "history")


def test_similar_items(client, state):
    item = state.current.item_ids[0]
    body = client.get(f"/items/{item}/similar", params={"k": 5}).json()
    assert body["item_id"] == item and len(body["items"]) == 5 and item not in _ids(body)
    assert all(any(r["type"] == "generator" for r in it["reasons"]) for it in body["items"])


# -- the live feedback loop ----------------------------------------------------------------------------

def test_bought_item_disappears_at_once_and_is_durable(client, state):
    user = _active_user(state, rank=1)
    top = _ids(client.get(f"/recommendations/{user}", params={"k": 10}).json())[0]
    r = client.post("/events", json={"user_id": user, "item_id": top, "behavior": "buy"}, headers=AUTH)
    assert r.json() == {"accepted": 1, "rejected": []}
    assert top not in _ids(client.get(f"/recommendations/{user}", params={"k": 10}).json())
    reader = store_reader(state.store)  # committed before the answer: another connection sees it
    try:
        n = reader.con.execute("SELECT count(*) FROM events WHERE user_id = ? AND item_id = ? AND behavior = 'buy' "
                               "AND source = 'api'", [user, top]).fetchone()[0]
    finally:
        reader.close()
    assert n == 1


def test_viewing_an_item_brings_its_neighbours(client, state):
    user = "visitor-never-seen-before"
    before = client.get(f"/recommendations/{user}", params={"k": 10}).json()
    assert all(it["reasons"][0]["type"] == "fallback" for it in before["items"])
    item = state.current.item_ids[17]
    assert client.post("/events", json=[{"user_id": user, "item_id": item, "behavior": "view"}],
                       headers=AUTH).json()["accepted"] == 1
    after = client.get(f"/recommendations/{user}", params={"k": 10}).json()
    neighbours = set(_ids(client.get(f"/items/{item}/similar", params={"k": 20}).json()))
    assert set(_ids(after)) & neighbours
    assert any(r.get("item_id") == item for it in after["items"] for r in it["reasons"] if r["type"] == "history")


def test_known_user_live_events_fold_into_the_factor_model(client, state, monkeypatch):
    user = _active_user(state, rank=2)
    als = state.current.pipeline.generators_["als"]
    calls = []
    real = type(als).score

    def spy(self, users, histories, fold_in=None, live=False):
        calls.append(live)
        return real(self, users, histories, fold_in=fold_in, live=live)

    monkeypatch.setattr(type(als), "score", spy)
    client.get(f"/recommendations/{user}")
    assert calls and not any(calls)  # no live events yet: the trained vector
    item = state.current.item_ids[42]
    client.post("/events", json={"user_id": user, "item_id": item, "behavior": "cart"}, headers=AUTH)
    calls.clear()
    client.get(f"/recommendations/{user}")
    assert calls and all(calls)  # re-solved from the history with the new event


def test_rejected_events_name_index_and_reason(client, state):
    batch = [
        {"user_id": "u1", "item_id": "i1", "behavior": "view"},
        {"user_id": "u1", "item_id": "i1", "behavior": "teleport"},
        {"item_id": "i1", "behavior": "view"},
        {"user_id": "u1", "behavior": "view"},
        {"user_id": "u1", "item_id": "i1", "behavior": "view", "timestamp": "yesterday-ish"},
        {"user_id": "u1", "item_id": "i1", "behavior": "view", "timestamp": "2999-01-01T00:00:00Z"},
        {"user_id": "u\u0000x", "item_id": "i1", "behavior": "view"},
        {"user_id": "u1", "item_id": "i1", "behavior": "purchase", "timestamp": 1767607200},
    ]
    body = client.post("/events", json=batch, headers=AUTH).json()
    assert body["accepted"] == 2
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert set(reasons) == {1, 2, 3, 4, 5, 6}
    assert reasons[1].startswith("unknown behavior") and reasons[2] == "missing user_id"
    assert reasons[3] == "missing item_id" and reasons[4].startswith("timestamp does not parse")
    assert reasons[5].startswith("timestamp out of range") and "control character" in reasons[6]


# -- fallbacks ------------------------------------------------------------------------------------------

def test_unknown_user_gets_trending_in_the_requested_category(client, state):
    body = client.get("/recommendations/nobody-at-all", params={"k": 5, "category": "home"}).json()
    assert len(body["items"]) == 5
    cat = state.histories.catalogue
    for it in body["items"]:
        assert it["reasons"][0]["fallback"] == "category"
        assert cat.category_names[cat.category[state.histories.item_code(it["item_id"])]].startswith("home")
    assert client.get("/recommendations/nobody-at-all", params={"category": "no-such-category"}).json()["items"] == []


def test_unknown_item_gets_its_category_and_brand(client, state):
    hs = state.histories
    cat = hs.catalogue
    pairs = cat.category.astype(np.int64) * 10_000 + cat.brand
    uniq, counts = np.unique(pairs[cat.available], return_counts=True)
    item = int(np.flatnonzero(pairs == uniq[np.argmax(counts)])[0])  # its category and brand hold other items
    known = hs.item_ids([item])[0]
    # an item in the catalogue the model never saw: same category and brand as a known one
    hs.ensure_items(["brand-new-item"])
    code = hs.item_code("brand-new-item")
    assert code >= len(hs.catalogue)  # not in the catalogue either: popular items
    body = client.get("/items/brand-new-item/similar", params={"k": 4}).json()
    assert len(body["items"]) == 4 and body["items"][0]["reasons"][0]["fallback"] == "trending"
    c0, b0 = cat.category[item], cat.brand[item]
    m = state.current.code_to_model[item]
    state.current.code_to_model[item] = -1  # pretend the model does not know the item
    try:
        body = client.get(f"/items/{known}/similar", params={"k": 3}).json()
    finally:
        state.current.code_to_model[item] = m
    first = body["items"][0]
    assert first["reasons"][0]["fallback"] == "category_brand"
    code = hs.item_code(first["item_id"])
    assert cat.category[code] == c0 and cat.brand[code] == b0


def test_empty_store_and_no_model_answer_empty_lists(tmp_path):
    empty = EventStore(tmp_path / "empty.duckdb")
    app = create_app(tmp_path / "no-model", empty, ServingSettings(api_key=KEY, reload_poll_seconds=None))
    try:
        c = TestClient(app, raise_server_exceptions=False)
        assert c.get("/health").json()["model_version"] is None
        assert c.get("/recommendations/anyone").json() == {"user_id": "anyone", "model_version": None, "items": []}
        assert c.get("/items/x/similar").json()["items"] == []
        assert c.post("/recommendations/session", json={"items": ["x"]}).json()["items"] == []
    finally:
        app.state.server.close()


def test_model_without_store_events_recommends_no_fake_trending(tmp_path):
    store, model = fresh_copy(tmp_path)
    empty = EventStore(tmp_path / "empty.duckdb")
    app = create_app(model, empty, ServingSettings(api_key=KEY, reload_poll_seconds=None))
    try:
        c = TestClient(app, raise_server_exceptions=False)
        assert c.get("/recommendations/stranger").json()["items"] == []
    finally:
        app.state.server.close()


# -- auth -------------------------------------------------------------------------------------------------

def test_writes_need_the_key(client, monkeypatch):
    import fusionrec.serving.auth as auth

    event = {"user_id": "u1", "item_id": "i1", "behavior": "view"}
    r = client.post("/events", json=event)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/events", json=event, headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.post("/events", json=event, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.delete("/users/u1", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.post("/admin/retrain").status_code == 401
    compared = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    assert client.post("/events", json=event, headers=AUTH).status_code == 200
    assert compared  # the key is checked in constant time
    assert client.get("/recommendations/u1").status_code == 200  # reads are open


def test_without_a_key_only_loopback_may_write(tmp_path):
    store, model = fresh_copy(tmp_path)
    app = create_app(model, store, ServingSettings(api_key=None, reload_poll_seconds=None))
    try:
        event = {"user_id": "u1", "item_id": "i1", "behavior": "view"}
        remote = TestClient(app, client=("203.0.113.9", 5000))
        assert remote.post("/events", json=event).status_code == 403
        assert remote.get("/recommendations/u1").status_code == 200
        local = TestClient(app, client=("127.0.0.1", 5000))
        assert local.post("/events", json=event).json()["accepted"] == 1
    finally:
        app.state.server.close()


# -- input limits and nasty inputs ----------------------------------------------------------------------

@pytest.mark.parametrize("path, field", [
    ("/recommendations/u1?k=0", "query.k"), ("/recommendations/u1?k=101", "query.k"),
    ("/recommendations/u1?k=ten", "query.k"), ("/recommendations/u1?price_max=nan", "query.price_max"),
    ("/recommendations/u1?price_max=-1", "query.price_max"), ("/items/i1/similar?k=1000", "query.k"),
    ("/recommendations/" + "u" * 300, "path.user_id"), ("/items/" + "i" * 257 + "/similar", "path.item_id"),
    ("/recommendations/u1?category=" + "c" * 300, "query.category"),
])
def test_bad_parameters_get_422_naming_the_field(client, path, field):
    r = client.get(path)
    assert r.status_code == 422
    assert field in r.json()["error"]


def test_bad_bodies_get_422_naming_the_field(client):
    r = client.post("/recommendations/session", json={"items": ["a"] * 101})
    assert r.status_code == 422 and "body.items" in r.json()["error"]
    r = client.post("/recommendations/session", json={"items": ["a"], "k": 0})
    assert r.status_code == 422 and "body.k" in r.json()["error"]
    r = client.post("/recommendations/session", json={"items": ["x" * 257]})
    assert r.status_code == 422 and "body.items.0" in r.json()["error"]
    r = client.post("/events", json=[{"user_id": "u", "item_id": "i", "behavior": "view"}] * 1001, headers=AUTH)
    assert r.status_code == 422 and "body" in r.json()["error"]
    r = client.post("/events", json={"user_id": "u" * 257, "item_id": "i", "behavior": "view"}, headers=AUTH)
    assert r.status_code == 422 and "user_id" in r.json()["error"]


def test_a_batch_of_1000_is_accepted(client):
    batch = [{"user_id": f"bulk-{i % 50}", "item_id": f"i{i % 200:05d}", "behavior": "view"} for i in range(1000)]
    assert client.post("/events", json=batch, headers=AUTH).json()["accepted"] == 1000


def test_big_bodies_are_refused_before_parsing(client):
    r = client.post("/events", content=b"[" + b" " * 10_000_000 + b"]", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413

    def chunks():
        yield b"["
        for _ in range(20):
            yield b" " * 100_000
        yield b"]"

    r = client.post("/events", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("body", [
    b"{not json", b"null", b'"a string"', b"42", b"[" * 50_000 + b"]" * 50_000, b"\xff\xfe\x00garbage",
    b'{"user_id": {"nested": 1}, "item_id": "i", "behavior": "view"}',
    b'[{"user_id": "u", "item_id": "i", "behavior": "view", "quantity": 1e400}]',
    b'[{"user_id": "u", "item_id": "i", "behavior": "view", "quantity": 100000000000000000000000}]',
    b'[{"user_id": "u", "item_id": "i", "behavior": "view", "price": -5}]',
    b'[{"user_id": "u", "item_id": "i", "behavior": "view", "timestamp": 1e300}]',
    b'[{"user_id": "\\ud800", "item_id": "i", "behavior": "view"}]',
    b'[{"user_id": "\\u00fc\\ud83d\\ude00", "item_id": "i\'; DROP TABLE events; --", "behavior": "VIEW"}]',
    b"[]", b"[{}]",
])
def test_nasty_event_bodies_never_500(client, body):
    r = client.post("/events", content=body, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code in (200, 400, 422), (r.status_code, r.text[:200])


@pytest.mark.parametrize("path", [
    "/recommendations/%00", "/recommendations/..%2F..%2Fetc", "/recommendations/%F0%9F%98%80?k=3",
    "/recommendations/u1?exclude=,,,%00,", "/items/%00/similar", "/items/%20/similar",
    "/recommendations/u1?category=%2F", "/recommendations/u1?k=1&k=2", "/experiments/%00",
])
def test_nasty_paths_never_500(client, path):
    assert client.get(path).status_code in (200, 404, 422)


def test_store_still_consistent_after_the_nasty_inputs(client, state):
    reader = store_reader(state.store)
    try:
        assert reader.con.execute("SELECT count(*) FROM events WHERE item_id LIKE '%DROP TABLE%'").fetchone()[0] == 1
    finally:
        reader.close()


# -- forgetting a user ---------------------------------------------------------------------------------------

def test_delete_user_removes_events_model_state_and_history(client, state):
    user = _active_user(state, rank=5)
    client.post("/events", json=[{"user_id": user, "item_id": "i1", "behavior": "nonsense"}], headers=AUTH)
    u = state.current.user_index(user)
    assert u >= 0
    item = state.current.item_ids[0]
    posted = client.post("/events", json={"user_id": user, "item_id": item, "behavior": "view"}, headers=AUTH)
    assert posted.json()["accepted"] == 1
    client.get(f"/recommendations/{user}")  # a live event: the user's ALS vector is folded in and cached
    before = state.current
    assert before.pipeline.generators_["als"]._fold_cache
    r = client.delete(f"/users/{user}", headers=AUTH)
    assert not before.pipeline.generators_["als"]._fold_cache  # nothing derived from their history is kept
    assert r.status_code == 200
    body = r.json()
    assert body["events_deleted"] > 0 and body["model_versions_updated"]
    reader = store_reader(state.store)
    try:
        con = reader.con
        assert con.execute("SELECT count(*) FROM events WHERE user_id = ?", [user]).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM quarantine WHERE contains(raw, ?)", [user]).fetchone()[0] == 0
        audit = con.execute("SELECT subject, details FROM audit_log").fetchall()
    finally:
        reader.close()
    assert pseudonym(user, None) in [a[0] for a in audit]
    assert all(user not in a[0] and user not in a[1] for a in audit)
    assert state.current.user_index(user) == -1
    als = state.current.pipeline.generators_["als"]
    assert not np.any(als.user_factors_[u])
    assert (state.current.path / "users.txt").read_text().split("\n").count(user) == 0
    answer = client.get(f"/recommendations/{user}").json()
    assert all(it["reasons"][0]["type"] == "fallback" for it in answer["items"])


# -- the answer cache ---------------------------------------------------------------------------------

def test_a_returning_user_gets_the_kept_answer_until_what_it_depends_on_changes(client, state):
    user = _active_user(state, rank=6)
    cache = state.recommender.cache
    first = client.get(f"/recommendations/{user}", params={"k": 8}).json()
    hits, misses = cache.hits, cache.misses
    assert client.get(f"/recommendations/{user}", params={"k": 8}).json() == first
    assert (cache.hits, cache.misses) == (hits + 1, misses)
    client.get(f"/recommendations/{user}", params={"k": 9})  # other parameters: computed
    assert cache.misses == misses + 1
    top = _ids(first)[0]
    client.post("/events", json={"user_id": user, "item_id": top, "behavior": "buy"}, headers=AUTH)
    after = client.get(f"/recommendations/{user}", params={"k": 8}).json()  # the event: computed again
    assert cache.misses == misses + 2 and top not in _ids(after)
    assert 'fusionrec_answer_cache_lookups{result="hit"}' in client.get("/metrics").text
    assert user in cache
    client.delete(f"/users/{user}", headers=AUTH)
    assert user not in cache  # nothing derived from a forgotten user is kept


def test_answer_cache_expiry_eviction_and_off():
    from fusionrec.errors import ConfigError
    from fusionrec.serving.answer_cache import AnswerCache

    now = [0.0]
    cache = AnswerCache(seconds=30, users=2, clock=lambda: now[0])
    cache.put("a", ("v1", 0), ["x"])
    assert cache.get("a", ("v1", 0)) == ["x"] and cache.get("a", ("v1", 1)) is None  # another key misses
    now[0] = 31.0
    assert cache.get("a", ("v1", 0)) is None  # expired
    cache.put("a", 1, "A")
    now[0] = 40.0
    cache.put("b", 1, "B")
    assert cache.get("a", 1) == "A"  # a hit keeps a where it was: first to expire, first to go
    cache.put("c", 1, "C")
    assert "a" not in cache and cache.get("b", 1) == "B" and cache.get("c", 1) == "C" and len(cache) == 2
    cache.put("b", 2, "B2")  # b's new answer lives 30 s from now: it goes to the back
    cache.put("d", 1, "D")  # nothing expired yet: the oldest answer (c) leaves
    assert len(cache) == 2 and "c" not in cache and cache.get("b", 2) == "B2"
    now[0] = 71.0
    cache.put("e", 1, "E")  # b and d expired: they leave as e comes, not only when asked for again
    assert len(cache) == 1 and "e" in cache
    now[0] = 80.0
    cache.put("f", 1, "F")
    now[0] = 95.0
    cache.get("e", 1)
    now[0] = 105.0
    cache.put("g", 1, "G")  # e expired (at 101) though hit after f was put: it leaves, f stays
    assert "e" not in cache and "f" in cache and "g" in cache
    off = AnswerCache(seconds=0, users=10)
    off.put("a", 1, "A")
    assert off.get("a", 1) is None and len(off) == 0
    with pytest.raises(ConfigError, match="answer_cache_seconds"):
        ServingSettings(answer_cache_seconds=-1)
    with pytest.raises(ConfigError, match="answer_cache_users"):
        ServingSettings(answer_cache_users="many")


def test_a_bad_cache_setting_names_the_file(tmp_path):
    from fusionrec.errors import ConfigError
    from fusionrec.serving.settings import load_settings

    cfg = tmp_path / "serve.toml"
    cfg.write_text("[serving]\nanswer_cache_seconds = -5\n")
    with pytest.raises(ConfigError, match=r"serve\.toml: \[serving\] answer_cache_seconds"):
        load_settings(cfg)
    cfg.write_text("[serving]\nanswer_cache_seconds = 0\n")
    assert load_settings(cfg).answer_cache_seconds == 0


def test_the_server_runs_the_store_on_the_configured_threads(client, state, tmp_path):
    from fusionrec.errors import ConfigError
    from fusionrec.serving.settings import load_settings

    assert state.settings.store_threads == 1  # the default
    assert state.store.con.execute("SELECT current_setting('threads')").fetchone()[0] == 1
    user = _active_user(state, rank=7)
    body = [{"user_id": user, "item_id": _ids(client.get(f"/recommendations/{user}").json())[0], "behavior": "view"},
            {"user_id": user, "behavior": "view"}]
    # one thread: the writer still validates, stores and quarantines in one go
    assert client.post("/events", json=body, headers=AUTH).json() == {
        "accepted": 1, "rejected": [{"index": 1, "reason": "missing item_id"}]}
    cfg = tmp_path / "serve.toml"
    for bad in ("-1", "1.5", "true", '"two"'):
        cfg.write_text(f"[serving]\nstore_threads = {bad}\n")
        with pytest.raises(ConfigError, match=r"serve\.toml: \[serving\] store_threads"):
            load_settings(cfg)
    cfg.write_text("[serving]\nstore_threads = 0\n")
    assert load_settings(cfg).store_threads == 0


# -- metrics ---------------------------------------------------------------------------------------------

def test_metrics_in_prometheus_format(client, state):
    client.get("/recommendations/u1")
    text = client.get("/metrics").text
    assert 'fusionrec_http_requests_total{method="GET",route="/recommendations/{user_id}",status="200"}' in text
    assert "fusionrec_http_request_seconds_bucket" in text
    assert f'fusionrec_model_info{{version="{state.current.version}"}} 1.0' in text
    assert "fusionrec_events_ingested_total" in text and "fusionrec_fallbacks_total" in text


def test_openapi_documents_the_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/health", "/recommendations/{user_id}", "/recommendations/session", "/items/{item_id}/similar",
              "/events", "/users/{user_id}", "/metrics", "/admin/retrain", "/experiments/{name}"):
        assert p in paths
    assert client.get("/docs").status_code == 200
