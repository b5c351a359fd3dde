"""The model registry: manifests with checksums, the atomic `current` pointer, refusing corrupt versions,
and the CLI commands train / recommend / forget."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from _serving_shop import fresh_copy, shop_folder
from fusionrec.cli import app as cli
from fusionrec.serving.forget import pseudonym
from fusionrec.serving.versions import (MANIFEST, ModelLoadError, list_versions, load_newest_valid, load_version,
                                        read_current, rewrite_manifest, write_version)
from fusionrec.store.event_store import EventStore

FAST_TOML = """
[pipeline]
n_candidates = 30
seed = 1
[generators.pop]
[generators.itemknn]
[generators.als]
factors = 8
iterations = 3
[ranker]
n_estimators = 20
num_threads = 1
"""


@pytest.fixture()
def copy(tmp_path):
    return fresh_copy(tmp_path)


def test_manifest_lists_every_file_with_its_checksum(copy):
    _, model = copy
    name = read_current(model)
    folder = model / name
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["version"] == name and manifest["created_at"]
    assert manifest["data"]["checksum"].startswith("xorhash64:") and manifest["data"]["events"] == 20_000
    assert manifest["data"]["excluded_bot_users"] >= 1
    assert manifest["config"]["generators"]["als"]["factors"] == 16
    assert "valid_ndcg@20_heldout_users" in manifest["metrics"]
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}
    assert set(manifest["files"]) == on_disk
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"].values())
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle")]


def test_new_version_becomes_current_and_sorts_after(copy):
    _, model = copy
    first = read_current(model)
    loaded = load_version(model)
    second = write_version(loaded.pipeline, model, data={"note": "copy"})
    assert read_current(model) == second.name != first
    assert list_versions(model) == [first, second.name]
    assert load_version(model).name == second.name
    third = write_version(loaded.pipeline, model, make_current=False)
    assert read_current(model) == second.name and list_versions(model)[-1] == third.name
    assert not [p for p in model.iterdir() if p.name.startswith(".v")]  # no temporary folders left


def _truncate(folder):
    p = folder / "features.npz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip_a_byte(folder):
    p = folder / "ranker.txt"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


def _drop_an_array(folder):
    p = folder / "generators" / "als" / "state.npz"
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files if k != "item_factors"}
    with open(p, "wb") as fh:
        np.savez(fh, **arrays)
    rewrite_manifest(folder, ["generators/als/state.npz"])  # checksums agree: the load itself must refuse


def _half_written(folder):
    (folder / MANIFEST).unlink()


def _lose_a_file(folder):
    (folder / "generators" / "itemknn" / "state.npz").unlink()


@pytest.mark.parametrize("damage, why", [
    (_truncate, "bytes"), (_flip_a_byte, "sha256"), (_drop_an_array, "does not load"),
    (_half_written, "half-written"), (_lose_a_file, "missing"),
])
def test_corrupt_versions_are_refused_with_a_reason(copy, damage, why):
    _, model = copy
    good = read_current(model)
    bad = write_version(load_version(model).pipeline, model)
    damage(bad)
    with pytest.raises(ModelLoadError, match=why):
        load_version(bad)
    loaded, problems = load_newest_valid(model)  # current is broken: the newest good one serves
    assert loaded is not None and loaded.name == good
    assert problems and why in problems[0]


def test_cli_train_recommend_forget(tmp_path, monkeypatch):
    monkeypatch.delenv("FUSIONREC_PSEUDONYM_KEY", raising=False)  # ids stored raw here: the audit uses sha256
    runner = CliRunner()
    store = tmp_path / "shop.duckdb"
    with EventStore(store) as st:
        st.ingest([shop_folder()], "fusionrec")
    toml = tmp_path / "fast.toml"
    toml.write_text(FAST_TOML)
    r = runner.invoke(cli, ["train", "--store", str(store), "--pipeline", str(toml), "--out", str(tmp_path / "m"),
                            "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert read_current(tmp_path / "m") == summary["version"]
    r = runner.invoke(cli, ["recommend", "--model", str(tmp_path / "m"), "--user", "u000010", "--k", "4", "--json"])
    assert r.exit_code == 0, r.output
    answer = json.loads(r.stdout)
    assert answer["model_version"] == summary["version"] and len(answer["items"]) == 4
    assert any(x["type"] == "history" for it in answer["items"] for x in it["reasons"])
    before = load_version(tmp_path / "m").pipeline
    row = before.users_.index("u000010")
    assert before.user_features_.recent[row].nnz > 0  # the user's recent items, among their per-user rows
    r = runner.invoke(cli, ["forget", "--store", str(store), "--user", "u000010", "--model", str(tmp_path / "m"),
                            "--json"])
    assert r.exit_code == 0, r.output
    after = load_version(tmp_path / "m").pipeline.user_features_
    for name in ("views", "favs", "carts", "buys", "last_seen", "recent"):  # every per-user matrix of the features
        assert getattr(after, name)[row].nnz == 0, name
    assert not after.values[row].any()
    out = json.loads(r.stdout)
    assert out["events_deleted"] > 0 and out["model_versions_updated"] == [summary["version"]]
    assert out["subject"] == pseudonym("u000010", None) and "u000010" not in r.stdout.replace('"u000010"', "")
    loaded = load_version(tmp_path / "m")  # still valid after the edit: checksums were rewritten
    assert loaded.pipeline.users_.index("u000010") == -1
    with EventStore(store, read_only=True) as st:
        assert st.con.execute("SELECT count(*) FROM events WHERE user_id = 'u000010'").fetchone()[0] == 0
        assert st.con.execute("SELECT subject FROM audit_log").fetchall() == [(pseudonym("u000010", None),)]
    r = runner.invoke(cli, ["recommend", "--model", str(tmp_path / "m"), "--user", "u000010", "--json"])
    assert all(it["reasons"][0]["type"] == "fallback" for it in json.loads(r.stdout)["items"])


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["train", "--store", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "no such store" in r.output
    r = runner.invoke(cli, ["recommend", "--model", str(tmp_path / "nothing"), "--user", "u"])
    assert r.exit_code == 2 and "no such model directory" in r.output
    (tmp_path / "m").mkdir()
    r = runner.invoke(cli, ["recommend", "--model", str(tmp_path / "m"), "--user", "u"])
    assert r.exit_code == 2 and "no current version" in r.output
    store, model = fresh_copy(tmp_path / "c")
    shutil.rmtree(model / read_current(model) / "generators")
    r = runner.invoke(cli, ["recommend", "--model", str(model), "--user", "u"])
    assert r.exit_code == 2 and "missing" in r.output and "Traceback" not in r.output


def test_closing_the_server_interrupts_and_awaits_readers_of_the_store(tmp_path):
    import threading
    import time

    import duckdb

    from fusionrec.serving.settings import ServingSettings
    from fusionrec.serving.state import ServerState

    store, model = fresh_copy(tmp_path)
    state = ServerState(model, store, ServingSettings(reload_poll_seconds=None))
    outcome: list[str] = []

    def long_scan() -> None:  # a dashboard summary over a huge store, still running at shutdown
        try:
            with state.reading() as reader:
                reader.con.execute("SELECT count(*) FROM range(100000000000) a").fetchall()
            outcome.append("finished")
        except duckdb.Error as exc:
            outcome.append(type(exc).__name__)

    t = threading.Thread(target=long_scan)
    t.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    state.close()  # must neither crash nor wait for the scan
    t.join(timeout=10)
    assert not t.is_alive() and outcome and outcome[0] != "finished"
    assert time.perf_counter() - t0 < 10
    with pytest.raises(RuntimeError, match="shutting down"):
        with state.reading():
            pass
