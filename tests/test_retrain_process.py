"""The server's retrain runs in a child process on a snapshot of the store: on an encrypted,
pseudonymised store the snapshot is encrypted too, the child opens it with the key from the
environment, the new version goes live, and the snapshot is gone afterwards."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient

from _serving_shop import BLEND_TOML, shop_folder
from fusionrec.errors import FusionrecError
from fusionrec.pipeline import PipelineConfig, load_pipeline_config
from fusionrec.serving.app import create_app
from fusionrec.serving.retrain_process import train_in_child
from fusionrec.serving.settings import ServingSettings
from fusionrec.serving.training import train_version
from fusionrec.store.event_store import EventStore

STORE_KEY = "snapshot test key 0123456789"
API_KEY = "retrain-key"


def test_retrain_on_an_encrypted_store_goes_through_an_encrypted_snapshot(tmp_path, monkeypatch):
    shop = shop_folder()  # built (and cached) before the key is set: other modules share it unencrypted
    monkeypatch.setenv("FUSIONREC_STORE_KEY", STORE_KEY)
    toml = tmp_path / "blend.toml"
    toml.write_text(BLEND_TOML)
    db = tmp_path / "enc.duckdb"
    with EventStore(db, key=STORE_KEY) as st:
        st.ingest([shop], "fusionrec")
        train_version(st, tmp_path / "model", load_pipeline_config(toml))

    snapshots: list[Path] = []
    original = EventStore.snapshot

    def checked(self, path):  # the snapshot exists only encrypted, while the child reads it
        original(self, path)
        snapshots.append(Path(path))
        with pytest.raises(duckdb.Error):
            duckdb.connect(str(path)).execute("SELECT count(*) FROM events").fetchall()
        with EventStore(path, key=STORE_KEY, read_only=True) as snap:
            assert snap.count("events") == self.count("events") > 0

    monkeypatch.setattr(EventStore, "snapshot", checked)
    app = create_app(tmp_path / "model", db, ServingSettings(api_key=API_KEY, reload_poll_seconds=None,
                                                             pipeline=toml))
    try:
        with TestClient(app) as client:
            before = client.get("/health").json()["model_version"]
            r = client.post("/admin/retrain", params={"wait": True},
                            headers={"Authorization": f"Bearer {API_KEY}"})
            assert r.status_code == 200 and r.json()["last"] == "ok", r.text
            after = client.get("/health").json()["model_version"]
            assert after != before and after == r.json()["version"]
            assert client.get("/recommendations/u000001", params={"k": 5}).status_code == 200
    finally:
        app.state.server.close()
    assert len(snapshots) == 1 and not snapshots[0].exists() and not snapshots[0].parent.exists()


def test_a_failing_child_names_its_error(tmp_path):
    with EventStore(tmp_path / "empty.duckdb") as st:  # no events: the child cannot train
        with pytest.raises(FusionrecError, match="retrain process failed.*no events"):
            train_in_child(st.snapshot, tmp_path / "model", PipelineConfig(generators={"pop": {}}, fuser="rrf"))
