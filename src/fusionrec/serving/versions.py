"""The model registry: versioned artefact folders with a manifest of checksums and an atomic `current` pointer.

Layout of a model directory::

    MODEL_DIR/
      current                 one line: the name of the serving version (replaced atomically)
      v20260105T101112Z-1/    a version: the pipeline's own files plus manifest.json
      v20260106T090000Z-2/
      .lock                   serialises writers (train, forget) across processes

A version folder is written under a temporary name and renamed into place only when complete, and
its manifest (written last) lists the sha256 and size of every file. Loading checks all of them, so
a truncated, edited or half-written version is refused with a reason instead of being served.

When FUSIONREC_STORE_KEY is set, every file of a new version but the manifest is encrypted with
AES-256-GCM (see `fusionrec.crypto`) and the manifest says so; the checksums are those of the
encrypted files, so they are checked before anything is decrypted. Loading decrypts into a private
temporary folder in memory (/dev/shm) that is removed as soon as the pipeline is loaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from fusionrec.crypto import CIPHER, ArtefactKeyError, decrypted_copy, encrypt_file, key_id
from fusionrec.errors import FusionrecError

__all__ = ["ModelLoadError", "LoadedVersion", "MANIFEST", "FROM_ENV", "version_path", "write_version", "load_version", "resolve_version",
           "list_versions", "set_current", "read_current", "file_sha256", "registry_lock", "rewrite_manifest",
           "verify_manifest", "load_newest_valid"]

log = logging.getLogger("fusionrec.serving")

MANIFEST = "manifest.json"
CURRENT = "current"
FORMAT = 1
_NAME = re.compile(r"^v(\d{8}T\d{6}Z)-(\d+)$")
#: the default for `key` arguments: FUSIONREC_STORE_KEY (or its _FILE) through `config.read_secrets()`
FROM_ENV: Any = object()


def _artefact_key(key: Any) -> str | None:
    if key is FROM_ENV:
        from fusionrec.config import read_secrets

        return read_secrets().store_key
    return key or None


class ModelLoadError(FusionrecError):
    """A version folder that cannot be served: missing, corrupt, truncated or half-written."""


@dataclass
class LoadedVersion:
    """A validated, loaded version: its name, folder, manifest and the pipeline object."""

    name: str
    path: Path
    manifest: dict[str, Any]
    pipeline: Any  # FusedPipeline


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    """Write a small text file so that readers see the old or the new content, never a mix."""
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
    _fsync_dir(path.parent)


@contextmanager
def registry_lock(model_dir: Path) -> Iterator[None]:
    """An exclusive lock on a model directory (train, forget), across threads and processes."""
    model_dir.mkdir(parents=True, exist_ok=True)
    try:  # never through a symlink: the lock file is created in the model directory itself
        fd = os.open(model_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ModelLoadError(f"{model_dir}/.lock: cannot open the registry lock ({exc.strerror}; "
                             "is it a symlink?)") from None
    with os.fdopen(fd, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def list_versions(model_dir: Path) -> list[str]:
    """Version folder names, oldest first (by their sequence number); symlinks are not versions."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    found = [(int(m.group(2)), p.name) for p in model_dir.iterdir()
             if (m := _NAME.match(p.name)) and p.is_dir() and not p.is_symlink()]
    return [name for _, name in sorted(found)]


def version_path(model_dir: Path, name: str) -> Path:
    """MODEL_DIR/name for a version name from outside (a file, a config, a request), checked to stay inside.

    Only names like v20260105T101112Z-1 pass: no separators, no `..`, and the folder must be a real
    directory in the model directory, not a symlink to somewhere else. Raises ModelLoadError.
    """
    model_dir = Path(model_dir)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelLoadError(f"{model_dir}: {str(name)[:80]!r} is not a version name (expected e.g. "
                             "v20260105T101112Z-1)")
    folder = model_dir / name
    if folder.is_symlink():
        raise ModelLoadError(f"{model_dir}: version {name} is a symlink; versions must be folders inside the "
                             "model directory")
    if folder.exists() and folder.resolve().parent != model_dir.resolve():
        raise ModelLoadError(f"{model_dir}: version {name} resolves outside the model directory")
    return folder


def read_current(model_dir: Path) -> str | None:
    """The version name `current` points at, or None."""
    path = Path(model_dir) / CURRENT
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name if _NAME.match(name) else None


def set_current(model_dir: Path, name: str) -> None:
    """Point `current` at a version (atomic rename)."""
    if not (version_path(model_dir, name)).is_dir():
        raise ModelLoadError(f"{model_dir}: no version {name!r} to make current")
    _write_atomic(Path(model_dir) / CURRENT, name + "\n")


def _manifest_files(folder: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(folder).as_posix()] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
    return files


def write_version(pipeline: Any, model_dir: Path, *, data: dict[str, Any] | None = None,
                  metrics: dict[str, Any] | None = None, make_current: bool = True, key: Any = FROM_ENV) -> Path:
    """Save a fitted pipeline as a new version folder, then (by default) point `current` at it.

    The folder is built under a temporary name, every file's checksum goes into the manifest, the
    folder is renamed into place and only then does `current` move: a crash at any point leaves the
    previous version serving. With a `key` (default: FUSIONREC_STORE_KEY) the files are encrypted.
    """
    secret = _artefact_key(key)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with registry_lock(model_dir):
        existing = list_versions(model_dir)
        seq = 1 + max((int(_NAME.match(n).group(2)) for n in existing), default=0)  # type: ignore[union-attr]
        now = datetime.now(timezone.utc)
        name = f"v{now.strftime('%Y%m%dT%H%M%SZ')}-{seq}"
        tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".{name}."))
        try:
            pipeline.save(tmp)
            encryption = None
            if secret:
                for p in sorted(tmp.rglob("*")):
                    if p.is_file():
                        encrypt_file(p, secret, p.relative_to(tmp).as_posix())
                encryption = {"cipher": CIPHER, "key": "FUSIONREC_STORE_KEY", "key_id": key_id(secret)}
            manifest = {
                "format": FORMAT,
                "version": name,
                "created_at": now.isoformat(),
                "kind": getattr(pipeline, "name", "fusion"),
                "data": data or {},
                "config": pipeline.config(),
                "metrics": metrics or {},
                "files": _manifest_files(tmp),
            }
            if encryption:
                manifest["encryption"] = encryption
            _write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1, default=str))
            for p in tmp.rglob("*"):
                if p.is_file():
                    with open(p, "rb") as fh:
                        os.fsync(fh.fileno())
            os.chmod(tmp, 0o755)
            os.rename(tmp, model_dir / name)
            _fsync_dir(model_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if make_current:
            set_current(model_dir, name)
    log.info("wrote model version %s", name)
    return model_dir / name


def rewrite_manifest(folder: Path, changed: list[str], note: dict[str, Any] | None = None) -> None:
    """Recompute the checksums of `changed` files (relative paths) after an in-place edit (forget)."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    for rel in changed:
        p = folder / rel
        manifest["files"][rel] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
    if note:
        manifest.setdefault("edits", []).append(note)
    _write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1, default=str))


def resolve_version(model: Path) -> Path:
    """The version folder for `model`: a version folder itself, or the one MODEL_DIR/current names."""
    model = Path(model)
    if (model / MANIFEST).is_file() or (_NAME.match(model.name) and model.is_dir()):
        return model  # a version folder (one without a manifest is refused by the checks)
    if not model.is_dir():
        raise ModelLoadError(f"{model}: no such model directory; create one with `fusionrec train --out {model}`")
    name = read_current(model)
    if name is None:
        raise ModelLoadError(f"{model}: no current version (the `current` file is missing or invalid); "
                             "train one with `fusionrec train`")
    return version_path(model, name)


def verify_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a version folder after checking every file's size and sha256; raises ModelLoadError."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{folder.name}: no {MANIFEST} (half-written or not a version folder)") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder.name}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise ModelLoadError(f"{folder.name}: {MANIFEST} lacks format {FORMAT} or its file list")
    if not manifest["files"]:
        raise ModelLoadError(f"{folder.name}: {MANIFEST} lists no files")
    root = folder.resolve()
    for rel, meta in manifest["files"].items():
        p = (folder / rel).resolve()
        if root not in p.parents:
            raise ModelLoadError(f"{folder.name}: manifest path {rel!r} points outside the version folder")
        if not p.is_file():
            raise ModelLoadError(f"{folder.name}: {rel} is missing")
        size = p.stat().st_size
        if size != meta.get("bytes"):
            raise ModelLoadError(f"{folder.name}: {rel} has {size} bytes, the manifest says {meta.get('bytes')} "
                                 "(truncated or replaced)")
        if file_sha256(p) != meta.get("sha256"):
            raise ModelLoadError(f"{folder.name}: {rel} does not match its sha256 in the manifest (corrupt or edited)")
    return manifest


def load_version(model: Path, key: Any = FROM_ENV) -> LoadedVersion:
    """Validate and load a version (a version folder or MODEL_DIR whose `current` names one).

    An encrypted version is decrypted with `key` (default: FUSIONREC_STORE_KEY). Raises ModelLoadError
    with the reason when any check, the key or the load itself fails.
    """
    from fusionrec.pipeline import FusedPipeline

    folder = resolve_version(model)
    manifest = verify_manifest(folder)
    enc = manifest.get("encryption")
    try:
        if enc:
            secret = _artefact_key(key)
            if not secret:
                raise ModelLoadError(f"{folder.name}: is encrypted ({enc.get('cipher')}); set FUSIONREC_STORE_KEY "
                                     "(or FUSIONREC_STORE_KEY_FILE) to the key it was written with")
            if enc.get("key_id") and enc["key_id"] != key_id(secret):
                raise ModelLoadError(f"{folder.name}: was encrypted with another key (key id {enc['key_id']}, "
                                     f"FUSIONREC_STORE_KEY has id {key_id(secret)})")
            with decrypted_copy(folder, list(manifest["files"]), secret) as plain:
                pipeline = FusedPipeline.load(plain)
        else:
            pipeline = FusedPipeline.load(folder)
    except ModelLoadError:
        raise
    except ArtefactKeyError as exc:
        raise ModelLoadError(f"{folder.name}: {exc}") from None
    except Exception as exc:  # a missing array, a bad config: refuse the version, keep the caller alive
        raise ModelLoadError(f"{folder.name}: the pipeline does not load ({type(exc).__name__}: {exc})") from None
    return LoadedVersion(name=str(manifest.get("version", folder.name)), path=folder, manifest=manifest,
                         pipeline=pipeline)


def load_newest_valid(model_dir: Path) -> tuple[LoadedVersion | None, list[str]]:
    """The current version, or when it is refused the newest older version that loads; plus the refusals."""
    problems: list[str] = []
    model_dir = Path(model_dir)
    if (model_dir / MANIFEST).is_file():
        try:
            return load_version(model_dir), problems
        except ModelLoadError as exc:
            return None, [str(exc)]
    names = list_versions(model_dir)
    current = read_current(model_dir)
    order = ([current] if current in names else []) + [n for n in reversed(names) if n != current]
    for name in order:
        try:
            return load_version(version_path(model_dir, name)), problems
        except ModelLoadError as exc:
            log.error("refused model version %s", exc)
            problems.append(str(exc))
    return None, problems
