"""A/B tests: stable hash bucketing with the declared shares, impressions and attributed outcomes,
and the per-variant report with its two-proportion z-test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from _serving_shop import fresh_copy
from fusionrec.serving.ab import Experiment, ExperimentTracker, Variant, bucket, two_proportion_z
from fusionrec.serving.app import create_app
from fusionrec.serving.settings import load_settings
from fusionrec.serving.versions import load_version, read_current, write_version

KEY = "ab-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _exp(name="rec-test", shares=(0.3, 0.7)):
    return Experiment(name, tuple(Variant(f"v{i}", "current", s) for i, s in enumerate(shares)))


def test_bucketing_is_stable_and_follows_the_shares():
    exp = _exp()
    users = [f"user-{i}" for i in range(20_000)]
    first = [exp.assign(u).name for u in users]
    assert first == [_exp().assign(u).name for u in users]  # a pure function of (experiment, user)
    share = first.count("v0") / len(first)
    assert abs(share - 0.3) < 0.015
    other = _exp("another-test")
    a = np.asarray([bucket("rec-test", u) for u in users])
    b = np.asarray([bucket(other.name, u) for u in users])
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.05  # experiments are bucketed independently


def test_shares_below_one_leave_users_out():
    exp = _exp(shares=(0.1, 0.1))
    out = sum(exp.assign(f"u{i}") is None for i in range(5000)) / 5000
    assert abs(out - 0.8) < 0.03
    with pytest.raises(ValueError):
        _exp(shares=(0.7, 0.7))


def test_two_proportion_z_matches_the_textbook():
    z, p = two_proportion_z(100, 1000, 130, 1000)
    assert math.isclose(z, 2.1028, abs_tol=1e-3) and math.isclose(p, 0.0355, abs_tol=1e-3)
    assert two_proportion_z(0, 0, 5, 10) == (0.0, 1.0)


def test_attribution_counts_each_impression_once_within_the_window():
    exp = Experiment("t", (Variant("a", "current", 1.0),), attribution_hours=1.0)
    tr = ExperimentTracker([exp])
    tr.impression("t", "a", "u", ["i1", "i2"], at=1000.0)
    tr.event("u", "i1", "view", at=1010.0)
    tr.event("u", "i2", "view", at=1020.0)  # the same impression: still one click
    tr.event("u", "i2", "buy", at=1030.0)
    tr.event("u", "i9", "buy", at=1040.0)  # not shown
    tr.impression("t", "a", "u", ["i3"], at=2000.0)
    tr.event("u", "i3", "view", at=2000.0 + 7200.0)  # after the window
    row = tr.report("t")["variants"][0]
    assert (row["impressions"], row["clicks"], row["conversions"]) == (2, 1, 1)


def test_impressions_past_the_attribution_window_are_let_go():
    """A long-running server keeps impressions only while an event could still be attributed to them."""
    exp = Experiment("t", (Variant("a", "current", 1.0),), attribution_hours=1.0)
    tr = ExperimentTracker([exp])
    for i in range(1000):
        tr.impression("t", "a", f"old-{i}", ["i1"], at=1000.0 + i)
    tr.impression("t", "a", "steady", ["i2"], at=2000.0)
    tr.impression("t", "a", "old-5", ["i3"], at=3000.0)  # back again: kept, with its new impression
    tr.impression("t", "a", "new", ["i1"], at=1000.0 + 3 * 3600.0)  # two hours past everyone else's
    assert set(tr._recent) == {"new"}
    tr.impression("t", "a", "later", ["i4"], at=1000.0 + 3.5 * 3600.0)
    assert list(tr._recent) == ["new", "later"]  # both within the hour
    tr.event("new", "i1", "buy", at=1000.0 + 3.6 * 3600.0)
    row = tr.report("t")["variants"][0]
    assert (row["impressions"], row["conversions"], row["users"]) == (1004, 1, 1003)


def test_experiment_over_the_api(tmp_path):
    store, model = fresh_copy(tmp_path)
    control = read_current(model)
    treatment = write_version(load_version(model).pipeline, model, make_current=False).name
    config = tmp_path / "serving.toml"
    config.write_text(f"""
[serving]
reload_poll_seconds = 0

[[experiments]]
name = "fusion-v2"
[experiments.variants]
control = {{ model = "current", share = 0.5 }}
treatment = {{ model = "{treatment}", share = 0.5 }}
""")
    settings = load_settings(config, api_key=KEY)
    assert settings.experiments[0].variants[1].model == treatment
    app = create_app(model, store, settings)
    try:
        client = TestClient(app)
        exp = settings.experiments[0]
        events = []
        seen = {"control": 0, "treatment": 0}
        for i in range(400):
            user = f"ab-{i}"
            body = client.get(f"/recommendations/{user}", params={"k": 5}).json()
            arm = exp.assign(user).name
            assert body["model_version"] == (control if arm == "control" else treatment)
            seen[arm] += 1
            # the treatment's lists get clicked three times as often
            if (arm == "treatment" and i % 10 < 6) or (arm == "control" and i % 10 < 2):
                events.append({"user_id": user, "item_id": body["items"][0]["item_id"], "behavior": "view"})
            if arm == "treatment" and i % 10 == 0:
                events.append({"user_id": user, "item_id": body["items"][1]["item_id"], "behavior": "buy"})
        assert client.post("/events", json=events, headers=AUTH).json()["accepted"] == len(events)
        report = client.get("/experiments/fusion-v2").json()
        rows = {r["name"]: r for r in report["variants"]}
        assert rows["control"]["impressions"] == seen["control"] and rows["treatment"]["impressions"] == seen["treatment"]
        assert rows["treatment"]["model_version"] == treatment and rows["control"]["model_version"] == control
        assert rows["treatment"]["ctr"] > rows["control"]["ctr"] > 0
        ctr = next(t for t in report["tests"] if t["metric"] == "ctr")
        assert ctr["significant"] and ctr["p_value"] < 0.05 and "beats" in ctr["summary"]
        assert rows["treatment"]["conversions"] > 0 and rows["control"]["conversions"] == 0
        assert client.get("/experiments/nope").status_code == 404
        assert 'fusionrec_ab_impressions_total{experiment="fusion-v2",variant="treatment"}' in client.get("/metrics").text
    finally:
        app.state.server.close()
