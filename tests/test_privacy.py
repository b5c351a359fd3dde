"""Privacy: pseudonymised ids never stored raw, encrypted store unreadable without its key."""

from __future__ import annotations

import pytest

from fusionrec.privacy import pseudonymize
from fusionrec.serving.events import EventWriter
from fusionrec.store.event_store import EventStore
from fusionrec.errors import FusionrecError

RAW_USER = "alice-raw-id-7731"
EMAIL = "alice.planted@example.com"


def events_file(tmp_path):
    p = tmp_path / "events.csv"
    p.write_text("user_id,item_id,behavior,timestamp,email\n"
                 f"{RAW_USER},i1,view,2026-01-05T10:00:00Z,{EMAIL}\n"
                 f"{RAW_USER},i2,buy,2026-01-05T10:05:00Z,{EMAIL}\n"
                 f"{RAW_USER},i3,teleport,2026-01-05T10:06:00Z,{EMAIL}\n"  # rejected: must not keep the raw line
                 "bob,i1,view,2026-01-05T11:00:00Z,bob@example.com\n")
    return p


def test_pseudonymised_ids_and_no_pii_in_the_store_file(tmp_path):
    db = tmp_path / "s.duckdb"
    with EventStore(db, pseudonym_key="k3y") as st:
        rep = st.ingest([events_file(tmp_path)], "fusionrec").total
        assert (rep.accepted, rep.rejected) == (3, 1)
        users = set(st.events()["user_id"])
        assert users == {pseudonymize(RAW_USER, "k3y"), pseudonymize("bob", "k3y")}
        assert st.quarantine()["raw"].null_count() == 1  # the rejected line's text is not kept
        st.con.execute("CHECKPOINT")
    blob = db.read_bytes()
    assert RAW_USER.encode() not in blob and EMAIL.encode() not in blob and b"example.com" not in blob


def test_encrypted_store_needs_its_key(tmp_path):
    db = tmp_path / "enc.duckdb"
    with EventStore(db, key="correct horse battery staple") as st:
        st.ingest([events_file(tmp_path)], "fusionrec")
        # the API's writer works on the attached encrypted store too (its inbox and prepared statements)
        writer = EventWriter(st)
        try:
            res = writer.write([{"user_id": "carol", "item_id": "i9", "behavior": "view"}, {"item_id": "i9", "behavior": "view"}])
        finally:
            writer.close()
        assert len(res.accepted) == 1 and [r["reason"] for r in res.rejected] == ["missing user_id"]
        st.con.execute("CHECKPOINT")
    assert RAW_USER.encode() not in db.read_bytes() and b"i1,view" not in db.read_bytes()
    with pytest.raises(FusionrecError):
        EventStore(db)  # no key
    with pytest.raises(FusionrecError):
        EventStore(db, key="wrong")
    with EventStore(db, key="correct horse battery staple", read_only=True) as st:
        assert st.count("events") == 4


def test_end_to_end_raw_ids_never_stored_but_served(tmp_path):
    import polars as pl
    from fastapi.testclient import TestClient

    from fusionrec.data.synthetic import ShopConfig, generate_shop, write_shop
    from fusionrec.pipeline import PipelineConfig
    from fusionrec.serving.app import create_app
    from fusionrec.serving.settings import ServingSettings
    from fusionrec.serving.training import train_version

    key = "pseudo-secret"
    shop = generate_shop(ShopConfig(n_users=150, n_items=100, n_events=8_000, seed=4))
    raw_user = shop.events["user_id"].value_counts(sort=True)["user_id"][3]
    events = shop.events.with_columns((pl.col("user_id") + "@mail.example").alias("email"))
    folder = tmp_path / "shop"
    write_shop(shop, folder)
    events.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(folder / "events.csv")
    with EventStore(tmp_path / "s.duckdb", pseudonym_key=key) as st:
        st.ingest([folder], "fusionrec")
        train_version(st, tmp_path / "model", PipelineConfig(
            generators={"pop": {}, "itemknn": {}, "als": {"factors": 8, "iterations": 3}}, n_candidates=20,
            ranker={"n_estimators": 20, "num_threads": 1}))
    app = create_app(tmp_path / "model", tmp_path / "s.duckdb", ServingSettings(pseudonym_key=key, reload_poll_seconds=None))
    with TestClient(app) as client:
        body = client.get(f"/recommendations/{raw_user}", params={"k": 5}).json()
    app.state.server.close()
    assert body["user_id"] == raw_user
    assert any(r["type"] == "history" for it in body["items"] for r in it["reasons"])  # found by its pseudonym
    needles = [raw_user.encode(), b"mail.example"]
    files = [tmp_path / "s.duckdb"] + [p for p in (tmp_path / "model").rglob("*") if p.is_file()]
    for f in files:
        data = f.read_bytes()
        assert not any(n in data for n in needles), f"raw id or email found in {f}"
