"""Forget a user: their events in the store, their rows in every model version, an audit entry by pseudonym.

Model versions are edited in place: the user's id in each `users.txt` becomes a random tombstone,
their rows of per-user arrays (ALS/BPR factors, user-kNN matrix, user features) are zeroed or
emptied, and the manifest's checksums are recomputed. Item-level aggregates (similarities,
popularity) keep the user's contribution, as they hold nothing about one person.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec import schema as S
from fusionrec.crypto import read_artefact, write_artefact
from fusionrec.serving.versions import MANIFEST, list_versions, registry_lock, rewrite_manifest

__all__ = ["pseudonym", "forget_in_store", "forget_in_versions", "forget_user", "AUDIT_DDL"]

#: arrays with one row per user, by name, in generators' state.npz and the pipeline's features.npz
PER_USER_DENSE = ("user_factors", "user_values")
PER_USER_SPARSE = ("x", "views", "favs", "carts", "buys", "last_seen", "recent")
AUDIT_DDL = "CREATE TABLE IF NOT EXISTS audit_log (logged_at TIMESTAMP, action VARCHAR, subject VARCHAR, details VARCHAR)"


def pseudonym(user_id: str, key: str | None) -> str:
    """What the audit log records instead of the id: HMAC-SHA256 with the pseudonym key, else SHA-256."""
    if key:
        return "hmac-sha256:" + hmac.new(key.encode(), user_id.encode(), hashlib.sha256).hexdigest()
    return "sha256:" + hashlib.sha256(user_id.encode()).hexdigest()


def forget_in_store(con: Any, user_id: str, subject: str, details: dict[str, Any] | None = None) -> int:
    """Delete the user's events, user row and quarantined rows naming them; log it. Returns events deleted."""
    con.execute("BEGIN TRANSACTION")
    try:
        n = int(con.execute(f"SELECT count(*) FROM events WHERE {S.USER_ID} = ?", [user_id]).fetchone()[0])
        con.execute(f"DELETE FROM events WHERE {S.USER_ID} = ?", [user_id])
        con.execute(f"DELETE FROM users WHERE {S.USER_ID} = ?", [user_id])
        # API rejects keep their JSON: match the exact key-value pair; file rejects: the id as a whole field
        pair = json.dumps({S.USER_ID: user_id})[1:-1]
        con.execute("DELETE FROM quarantine WHERE source = 'api' AND (contains(raw, ?) OR contains(raw, ?))",
                    [pair + ",", pair + "}"])
        field = "(^|[,;\\t \"|])" + re.escape(user_id) + "($|[,;\\t \"|])"
        con.execute("DELETE FROM quarantine WHERE source <> 'api' AND regexp_matches(raw, ?)", [field])
        con.execute(AUDIT_DDL)
        con.execute("INSERT INTO audit_log VALUES (now(), 'forget', ?, ?)",
                    [subject, json.dumps({"events_deleted": n, **(details or {})})])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return n


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _forget_rows(npz: Path, row: int, n_users: int, secret: str | None = None, name: str = "",
                 encrypted: bool = False) -> bool:
    """Zero the user's row of every per-user array in an npz (encrypted when the version is); True when changed."""
    with np.load(io.BytesIO(read_artefact(npz, secret, name)), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    changed = False
    for key in PER_USER_DENSE:
        a = arrays.get(key)
        if a is not None and a.ndim >= 1 and a.shape[0] == n_users:
            a = a.copy()
            a[row] = 0
            arrays[key] = a
            changed = True
    for key in PER_USER_SPARSE:
        if f"{key}.indptr" not in arrays or int(arrays[f"{key}.shape"][0]) != n_users:
            continue
        indptr = arrays[f"{key}.indptr"].copy()
        lo, hi = int(indptr[row]), int(indptr[row + 1])
        if hi > lo:
            arrays[f"{key}.data"] = np.concatenate([arrays[f"{key}.data"][:lo], arrays[f"{key}.data"][hi:]])
            arrays[f"{key}.indices"] = np.concatenate([arrays[f"{key}.indices"][:lo], arrays[f"{key}.indices"][hi:]])
            indptr[row + 1:] -= hi - lo
            arrays[f"{key}.indptr"] = indptr
            changed = True
    if changed:
        if encrypted:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            write_artefact(npz, buf.getvalue(), secret, name, encrypt=True)
        else:
            _save_npz(npz, arrays)
    return changed


def _forget_in_version(folder: Path, user_id: str) -> bool:
    if not (folder / MANIFEST).is_file():
        return False
    encrypted = bool(json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("encryption"))
    secret = None
    if encrypted:  # a missing or wrong key raises: forgetting must never skip a version silently
        from fusionrec.config import read_secrets

        secret = read_secrets().store_key
    changed: list[str] = []
    root = folder.resolve()
    for users_txt in sorted(folder.rglob("users.txt")):
        if users_txt.is_symlink() or root not in users_txt.resolve().parents:
            continue  # never read or write through a link out of the version folder
        rel = users_txt.relative_to(folder).as_posix()
        text = read_artefact(users_txt, secret, rel).decode("utf-8")
        ids = text.split("\n")[:-1] if text else []
        try:
            row = ids.index(user_id)
        except ValueError:
            continue
        ids[row] = f"forgotten:{uuid.uuid4().hex}"  # keeps the other users' indices; matches no real id
        if encrypted:
            write_artefact(users_txt, ("\n".join(ids) + "\n").encode("utf-8"), secret, rel, encrypt=True)
        else:
            _write_text(users_txt, "\n".join(ids) + "\n")
        changed.append(rel)
        for npz_name in ("state.npz", "features.npz"):
            npz = users_txt.parent / npz_name
            npz_rel = npz.relative_to(folder).as_posix()
            if npz.is_file() and not npz.is_symlink() and _forget_rows(npz, row, len(ids), secret, npz_rel, encrypted):
                changed.append(npz.relative_to(folder).as_posix())
    if changed:
        rewrite_manifest(folder, changed, note={"action": "forget", "at": datetime.now(timezone.utc).isoformat(),
                                                "files": len(changed)})
    return bool(changed)


def forget_in_versions(model_dir: Path, user_id: str) -> list[str]:
    """Remove a user from every version of a model directory (or one version folder); the names changed."""
    model_dir = Path(model_dir)
    if (model_dir / MANIFEST).is_file():
        return [model_dir.name] if _forget_in_version(model_dir, user_id) else []
    if not model_dir.is_dir():
        return []
    done = []
    with registry_lock(model_dir):
        for name in list_versions(model_dir):
            if _forget_in_version(model_dir / name, user_id):
                done.append(name)
    return done


def forget_user(store_path: Path, user_id: str, model_dir: Path | None = None) -> dict[str, Any]:
    """`fusionrec forget`: the store, then every model version; returns what was removed."""
    from fusionrec.config import read_secrets
    from fusionrec.errors import FusionrecError
    from fusionrec.store.open import open_store

    subject = pseudonym(user_id, read_secrets().pseudonym_key)
    try:
        st = open_store(store_path, must_exist=True)  # first, so a locked store changes nothing
    except FusionrecError as exc:
        if "lock" not in str(exc):
            raise
        raise FusionrecError(f"{exc}; if `fusionrec serve` holds the store, forget through it: "
                             "DELETE /users/{user_id}") from None
    with st:
        versions = forget_in_versions(model_dir, user_id) if model_dir is not None else []
        n = forget_in_store(st.con, user_id, subject, {"model_versions_updated": len(versions)})
    return {"subject": subject, "events_deleted": n, "model_versions_updated": versions}
