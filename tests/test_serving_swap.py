"""Hot swap: new versions (reloaded, polled or retrained from the store) go live with no failed request;
a corrupt version is refused and the previous one keeps serving."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from _serving_shop import BLEND_TOML, fresh_copy
from fusionrec.serving.app import create_app
from fusionrec.serving.settings import ServingSettings
from fusionrec.serving.versions import load_version, read_current, write_version

KEY = "swap-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("swap")
    store, model = fresh_copy(root)
    toml = root / "blend.toml"
    toml.write_text(BLEND_TOML)  # retrains here fit a blend: no LightGBM, so the test stays quick
    app = create_app(model, store, ServingSettings(api_key=KEY, reload_poll_seconds=None, pipeline=toml))
    yield app, model
    app.state.server.close()


class Traffic:
    """Requests from another thread until stopped: statuses, versions seen and latencies."""

    def __init__(self, app, users):
        self.client = TestClient(app, raise_server_exceptions=False)
        self.users = users
        self.statuses: list[int] = []
        self.versions: set[str] = set()
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        while not self._stop.is_set():
            user = self.users[i % len(self.users)]
            i += 1
            t0 = time.perf_counter()
            if i % 3 == 0:
                r = self.client.get("/items/i00010/similar")
            else:
                r = self.client.get(f"/recommendations/{user}", params={"k": 10})
            self.latencies.append(time.perf_counter() - t0)
            self.statuses.append(r.status_code)
            if r.status_code == 200:
                self.versions.add(r.json()["model_version"])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


def test_hot_swap_under_traffic_fails_no_request(env):
    app, model = env
    client = TestClient(app, raise_server_exceptions=False)
    users = ["u000001", "u000002", "u000050", "stranger"]
    first = client.get("/health").json()["model_version"]
    with Traffic(app, users) as traffic:
        time.sleep(0.3)
        for _ in range(2):
            new = write_version(load_version(model).pipeline, model)
            r = client.post("/admin/reload", headers=AUTH)
            assert r.json() == {"model_version": new.name, "swapped": True}
            time.sleep(0.2)
        r = client.post("/admin/retrain", params={"wait": True}, headers=AUTH)
        assert r.status_code == 200, r.text
        retrained = r.json()["version"]
        time.sleep(0.3)
    assert traffic.statuses and set(traffic.statuses) == {200}
    assert first in traffic.versions and retrained in traffic.versions and len(traffic.versions) >= 3
    assert client.get("/health").json()["model_version"] == retrained == read_current(model)
    assert load_version(model).pipeline.cfg.fuser == "blend"


def test_corrupt_version_is_refused_and_the_old_one_keeps_serving(env):
    app, model = env
    client = TestClient(app, raise_server_exceptions=False)
    serving = client.get("/health").json()["model_version"]
    bad = write_version(load_version(model).pipeline, model)
    (bad / "ranker.txt").unlink(missing_ok=True)
    p = bad / "fuser.json"
    p.write_text(p.read_text() + " ")
    with Traffic(app, ["u000003", "u000004"]) as traffic:
        r = client.post("/admin/reload", headers=AUTH).json()
        time.sleep(0.2)
    assert r["swapped"] is False and "fuser.json" in r["error"]
    assert client.get("/health").json()["model_version"] == serving
    assert set(traffic.statuses) == {200} and traffic.versions == {serving}
    assert "fusionrec_model_versions_refused_total 1.0" in client.get("/metrics").text


def test_a_second_retrain_while_one_runs_is_409(env):
    app, _ = env
    client = TestClient(app, raise_server_exceptions=False)
    first = client.post("/admin/retrain", headers=AUTH)
    assert first.status_code == 202
    second = client.post("/admin/retrain", headers=AUTH)
    assert second.status_code == 409
    for _ in range(600):
        status = client.get("/admin/retrain", headers=AUTH).json()
        if status["state"] == "idle":
            break
        time.sleep(0.1)
    assert status["last"] == "ok"


def test_the_poller_picks_up_a_version_trained_elsewhere(tmp_path):
    store, model = fresh_copy(tmp_path)
    app = create_app(model, store, ServingSettings(api_key=KEY, reload_poll_seconds=0.1))
    try:
        client = TestClient(app)
        new = write_version(load_version(model).pipeline, model)
        for _ in range(100):
            if client.get("/health").json()["model_version"] == new.name:
                break
            time.sleep(0.05)
        assert client.get("/health").json()["model_version"] == new.name
    finally:
        app.state.server.close()


def test_a_retrained_version_has_learned_the_live_events_before_it(env, monkeypatch):
    """Live events committed before the retrain's snapshot are in the new version: their users stop
    folding in on every request; an event after the swap folds in again."""
    app, _ = env
    client = TestClient(app, raise_server_exceptions=False)
    state = app.state.server
    user = "u000007"
    items = state.current.item_ids
    now = int(state.histories.newest)  # in the shop's time, so the retrain's validation window is the shop's
    r = client.post("/events", json=[{"user_id": user, "item_id": items[5], "behavior": "cart", "timestamp": now}],
                    headers=AUTH)
    assert r.json()["accepted"] == 1
    assert state.histories.history(user, state.current.learned_through).n_live == 1
    r = client.post("/admin/retrain", params={"wait": True}, headers=AUTH)
    assert r.status_code == 200, r.text
    model = state.current
    assert model.learned_through >= state.histories.live_mark() > 0
    hist = state.histories.history(user, model.learned_through)
    assert hist.n_live == 0 and items[5] in state.histories.item_ids(hist.items)  # kept, but learned
    # and moved from the live lists into the compact stored histories
    assert r.json()["live_events_rebased"] >= 1 and state.histories.history(user).n_live == 0

    als = model.pipeline.generators_["als"]
    calls: list[bool] = []
    real = type(als).score

    def spy(self, users, histories, fold_in=None, live=False):
        calls.append(live)
        return real(self, users, histories, fold_in=fold_in, live=live)

    monkeypatch.setattr(type(als), "score", spy)
    client.get(f"/recommendations/{user}")
    assert calls and not any(calls)
    client.post("/events", json={"user_id": user, "item_id": items[6], "behavior": "view", "timestamp": now},
                headers=AUTH)
    calls.clear()
    client.get(f"/recommendations/{user}")
    assert calls and all(calls)
