"""Model artefacts encrypted with FUSIONREC_STORE_KEY: unreadable without it, identical with it, checksums still
checked, and a version that cannot be decrypted is refused while the previous one keeps serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from _serving_shop import fresh_copy
from fusionrec.crypto import MAGIC
from fusionrec.serving.app import create_app
from fusionrec.serving.forget import forget_in_versions
from fusionrec.serving.settings import ServingSettings
from fusionrec.serving.versions import ModelLoadError, load_version, read_current, set_current, write_version

KEY = "artefact-test-key"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    store, model = fresh_copy(root)
    plain = load_version(model, key=None)
    enc = write_version(plain.pipeline, root / "enc_model", key=KEY)
    return root, store, model, plain, enc


def _some_users(plain, n=5):
    return [u for u in plain.pipeline.users_.ids()[:n]]


def test_files_are_unreadable_without_the_key(env):
    _, _, _, plain, enc = env
    manifest = json.loads((enc / "manifest.json").read_text())
    assert manifest["encryption"]["cipher"].startswith("AES-256-GCM")
    assert KEY not in (enc / "manifest.json").read_text()
    users = _some_users(plain)
    files = [p for p in enc.rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert any(p.name == "users.txt" for p in files) and any(p.suffix == ".npz" for p in files)
    for p in files:
        blob = p.read_bytes()
        assert blob.startswith(MAGIC), p
        assert b"PK\x03\x04" not in blob[:64] and b"\x93NUMPY" not in blob, p  # no npz/zip or npy magic
        for u in users:
            assert u.encode() not in blob, (p, u)
    # the plain version does hold them, so the check above means something
    assert users[0].encode() in (plain.path / "users.txt").read_bytes()


def test_loads_with_the_key_and_gives_the_same_answers(env, monkeypatch):
    _, _, _, plain, enc = env
    loaded = load_version(enc, key=KEY)
    users = np.arange(10)
    a = plain.pipeline.recommend(users, None, 10)
    b = loaded.pipeline.recommend(users, None, 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])
    monkeypatch.setenv("FUSIONREC_STORE_KEY", KEY)  # the default key comes from the environment
    assert load_version(enc).pipeline.users_.ids() == plain.pipeline.users_.ids()


def test_missing_or_wrong_key_is_a_clear_error(env, monkeypatch, tmp_path):
    _, _, _, _, enc = env
    monkeypatch.delenv("FUSIONREC_STORE_KEY", raising=False)
    with pytest.raises(ModelLoadError, match="is encrypted.*FUSIONREC_STORE_KEY"):
        load_version(enc)
    with pytest.raises(ModelLoadError, match="another key"):
        load_version(enc, key="not-the-key")
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("FUSIONREC_STORE_KEY_FILE", str(key_file))
    assert load_version(enc).name == enc.name


def test_checksums_are_still_verified(env, tmp_path):
    import shutil

    _, _, _, _, enc = env
    bad = tmp_path / enc.name
    shutil.copytree(enc, bad)
    target = bad / "users.txt"
    blob = bytearray(target.read_bytes())
    blob[-5] ^= 1
    target.write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_version(bad, key=KEY)
    # with a manifest fixed up to match, AES-GCM's tag still refuses the altered file
    from fusionrec.serving.versions import rewrite_manifest

    rewrite_manifest(bad, ["users.txt"])
    with pytest.raises(ModelLoadError, match="does not decrypt"):
        load_version(bad, key=KEY)


def test_server_keeps_serving_when_a_version_cannot_be_decrypted(env, monkeypatch):
    root, store, model, plain, _ = env
    monkeypatch.delenv("FUSIONREC_STORE_KEY", raising=False)
    monkeypatch.delenv("FUSIONREC_STORE_KEY_FILE", raising=False)
    app = create_app(model, store, ServingSettings(api_key="k", reload_poll_seconds=None))
    try:
        client = TestClient(app)
        before = client.get("/health").json()["model_version"]
        assert before == plain.name
        new = write_version(plain.pipeline, model, key=KEY, make_current=True)  # encrypted; the server has no key
        out = app.state.server.reload()
        assert out["swapped"] is False and "FUSIONREC_STORE_KEY" in out["error"]
        r = client.get(f"/recommendations/{_some_users(plain)[0]}")
        assert r.status_code == 200 and r.json()["model_version"] == before and r.json()["items"]
        monkeypatch.setenv("FUSIONREC_STORE_KEY", KEY)  # with the key the same version goes live
        assert app.state.server.reload(force=True)["swapped"] is True
        assert client.get("/health").json()["model_version"] == new.name
        set_current(model, plain.name)
    finally:
        app.state.server.close()
    assert read_current(model) == plain.name


def test_forget_edits_encrypted_versions(env, tmp_path, monkeypatch):
    import shutil

    _, _, _, plain, enc = env
    copy = tmp_path / "m" / enc.name
    shutil.copytree(enc, copy)
    user = _some_users(plain)[1]
    monkeypatch.delenv("FUSIONREC_STORE_KEY", raising=False)
    with pytest.raises(Exception, match="FUSIONREC_STORE_KEY"):  # never a silent skip
        forget_in_versions(copy, user)
    monkeypatch.setenv("FUSIONREC_STORE_KEY", KEY)
    assert forget_in_versions(copy, user) == [copy.name]
    loaded = load_version(copy)
    assert user not in loaded.pipeline.users_.ids()
    for p in copy.rglob("*"):
        if p.is_file() and p.name != "manifest.json":
            assert p.read_bytes().startswith(MAGIC)
