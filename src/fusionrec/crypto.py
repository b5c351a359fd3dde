"""AES-256-GCM encryption of model artefact files (user vectors, user ids) with the store key.

A file encrypted here is ``MAGIC | salt (16) | nonce (12) | ciphertext + tag (16)``. The file key is
derived from the secret (FUSIONREC_STORE_KEY) with HKDF-SHA256 over a fresh random salt, so the
secret is never used as an AES key directly and the DuckDB store and the artefacts never share one.
The file's path inside its version folder is authenticated too: an encrypted `users.txt` cannot be
swapped for another file without the tag failing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fusionrec.errors import FusionrecError

__all__ = ["MAGIC", "CIPHER", "ArtefactKeyError", "key_id", "is_encrypted", "encrypt_bytes", "decrypt_bytes",
           "encrypt_file", "read_artefact", "write_artefact", "decrypted_copy"]

MAGIC = b"FUSIONREC-AESGCM-1\n"
CIPHER = "AES-256-GCM/HKDF-SHA256"
_SALT, _NONCE = 16, 12
_INFO = b"fusionrec model artefact v1"


class ArtefactKeyError(FusionrecError):
    """An encrypted artefact without a key, with the wrong key, or with a damaged ciphertext."""


def key_id(secret: str) -> str:
    """A short public fingerprint of a secret, so a wrong key is named as such before any decryption."""
    return hmac.new(secret.encode(), b"fusionrec key id", hashlib.sha256).hexdigest()[:16]


def _file_key(secret: str, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(secret.encode())


def is_encrypted(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def encrypt_bytes(data: bytes, secret: str, name: str) -> bytes:
    """`data` sealed with a key derived from `secret`; `name` (the file's relative path) is authenticated."""
    salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
    sealed = AESGCM(_file_key(secret, salt)).encrypt(nonce, data, MAGIC + name.encode())
    return MAGIC + salt + nonce + sealed


def decrypt_bytes(blob: bytes, secret: str, name: str) -> bytes:
    """The inverse of `encrypt_bytes`; ArtefactKeyError when the key is wrong or the bytes were altered."""
    if not blob.startswith(MAGIC):
        raise ArtefactKeyError(f"{name}: not an encrypted artefact")
    head = len(MAGIC)
    salt, nonce, sealed = blob[head:head + _SALT], blob[head + _SALT:head + _SALT + _NONCE], blob[head + _SALT + _NONCE:]
    try:
        return AESGCM(_file_key(secret, salt)).decrypt(nonce, sealed, MAGIC + name.encode())
    except InvalidTag:
        raise ArtefactKeyError(f"{name}: does not decrypt with FUSIONREC_STORE_KEY (wrong key, or the file "
                               "was altered)") from None


def _replace_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encrypt_file(path: Path, secret: str, name: str) -> None:
    """Encrypt one file in place (atomically replaced)."""
    path = Path(path)
    _replace_atomic(path, encrypt_bytes(path.read_bytes(), secret, name))


def read_artefact(path: Path, secret: str | None, name: str) -> bytes:
    """A file's plain bytes: decrypted when it is encrypted (which needs `secret`), as is otherwise."""
    blob = Path(path).read_bytes()
    if not blob.startswith(MAGIC):
        return blob
    if not secret:
        raise ArtefactKeyError(f"{name}: is encrypted; set FUSIONREC_STORE_KEY (or FUSIONREC_STORE_KEY_FILE) "
                               "to the key it was written with")
    return decrypt_bytes(blob, secret, name)


def write_artefact(path: Path, data: bytes, secret: str | None, name: str, encrypt: bool) -> None:
    """Replace a file atomically, encrypted when `encrypt` (then `secret` is required)."""
    if encrypt:
        if not secret:
            raise ArtefactKeyError(f"{name}: is encrypted; set FUSIONREC_STORE_KEY to rewrite it")
        data = encrypt_bytes(data, secret, name)
    _replace_atomic(Path(path), data)


def _private_tmp_root() -> str | None:
    """A memory-backed folder when there is one, so decrypted artefacts never reach a disk."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@contextmanager
def decrypted_copy(folder: Path, files: list[str], secret: str) -> Iterator[Path]:
    """A private (0700) temporary copy of a version folder's `files`, decrypted; removed on exit."""
    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix="fusionrec-load-", dir=_private_tmp_root()))
    try:
        for rel in files:
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(read_artefact(folder / rel, secret, rel))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
