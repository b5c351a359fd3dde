"""Paths the server takes from files, configs and requests stay inside the model directory: version names such
as `../x`, symlinked versions, symlinked files and generator names in a version's config cannot reach outside."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from fastapi.testclient import TestClient

from _serving_shop import fresh_copy
from fusionrec.serving.ab import Experiment
from fusionrec.serving.app import create_app
from fusionrec.serving.forget import forget_in_versions
from fusionrec.serving.settings import ServingSettings
from fusionrec.serving.versions import (ModelLoadError, list_versions, load_newest_valid, load_version,
                                        read_current, registry_lock, rewrite_manifest, set_current, version_path)

KEY = "path-key"


@pytest.fixture()
def shop(tmp_path):
    store, model = fresh_copy(tmp_path)
    return tmp_path, store, model


@pytest.mark.parametrize("name", ["../x", "..", "/etc", "v20260101T000000Z-1/../../x", "v1", "", "current",
                                  "v20260101T000000Z-1/", "v20260101T000000Z-1\x00"])
def test_version_names_cannot_escape(shop, name):
    _, _, model = shop
    with pytest.raises(ModelLoadError, match="not a version name"):
        version_path(model, name)
    with pytest.raises(ModelLoadError):
        set_current(model, name)


def test_current_naming_a_path_is_ignored(shop):
    _, _, model = shop
    good = read_current(model)
    (model / "current").write_text("../../etc\n")
    assert read_current(model) is None
    with pytest.raises(ModelLoadError, match="no current version"):
        load_version(model)
    loaded, problems = load_newest_valid(model)  # the server falls back to the newest real version
    assert loaded is not None and loaded.name == good


def test_symlinked_version_out_of_the_model_dir_is_refused(shop):
    root, _, model = shop
    good = read_current(model)
    outside = root / "elsewhere" / "v20990101T000000Z-99"
    shutil.copytree(model / good, outside)
    link = model / outside.name
    os.symlink(outside, link)
    assert outside.name not in list_versions(model)
    (model / "current").write_text(outside.name + "\n")
    with pytest.raises(ModelLoadError, match="symlink"):
        load_version(model)
    with pytest.raises(ModelLoadError, match="symlink"):
        set_current(model, outside.name)
    loaded, _ = load_newest_valid(model)
    assert loaded is not None and loaded.name == good


def test_symlinked_file_inside_a_version_is_refused(shop):
    root, _, model = shop
    version = model / read_current(model)
    secret = root / "secret.txt"
    secret.write_text("not model data\n")
    target = version / "users.txt"
    target.unlink()
    os.symlink(secret, target)
    rewrite_manifest(version, ["users.txt"])  # even with matching checksums
    with pytest.raises(ModelLoadError, match="outside the version folder"):
        load_version(version)
    forget_in_versions(model, "not model data")  # forget neither reads nor writes through the link
    assert secret.read_text() == "not model data\n" and target.is_symlink()


def test_generator_names_cannot_point_outside(shop):
    _, _, model = shop
    version = model / read_current(model)
    cfg_path = version / "config.json"
    cfg = json.loads(cfg_path.read_text())
    gens = cfg["config"]["generators"]
    name = next(iter(gens))
    gens["../../" + name] = gens.pop(name)
    cfg_path.write_text(json.dumps(cfg))
    rewrite_manifest(version, ["config.json"])
    with pytest.raises(ModelLoadError, match="not plain names"):
        load_version(version)


def test_lock_file_symlink_is_not_followed(shop):
    root, _, model = shop
    victim = root / "victim"
    victim.write_text("keep")
    (model / ".lock").unlink(missing_ok=True)
    os.symlink(victim, model / ".lock")
    with pytest.raises(ModelLoadError, match="symlink"):
        with registry_lock(model):
            pass
    assert victim.read_text() == "keep"


def test_experiment_variant_paths_stay_in_the_model_dir(shop):
    root, store, model = shop
    outside = root / "outside-model"
    shutil.copytree(model / read_current(model), outside / read_current(model))
    exp = Experiment.from_dict({"name": "esc", "variants": {
        "a": {"model": "current", "share": 0.5},
        "b": {"model": f"../outside-model/{read_current(model)}", "share": 0.5}}})
    app = create_app(model, store, ServingSettings(api_key=KEY, reload_poll_seconds=None, experiments=[exp]))
    try:
        state = app.state.server
        assert ("esc", "b") not in state.variant_models  # refused: the current model serves that arm
        assert TestClient(app).get("/recommendations/u000001").status_code == 200
    finally:
        app.state.server.close()


def test_admin_endpoints_take_no_paths(shop):
    _, store, model = shop
    app = create_app(model, store, ServingSettings(api_key=KEY, reload_poll_seconds=None))
    try:
        c = TestClient(app)
        auth = {"Authorization": f"Bearer {KEY}"}
        before = c.get("/health").json()["model_version"]
        (model / "current").write_text("../../../tmp/x\n")  # a tampered pointer is not followed
        r = c.post("/admin/reload", headers=auth)
        assert r.status_code == 200 and r.json()["swapped"] is False
        assert c.get("/health").json()["model_version"] == before
        schema = c.get("/openapi.json").json()
        params = [p["name"] for ops in schema["paths"].values() for op in ops.values()
                  for p in op.get("parameters", [])]
        assert not {"path", "dir", "model", "out", "file", "folder"} & set(params), params
    finally:
        app.state.server.close()
