"""Pseudonymised user ids: a keyed HMAC-SHA256 of the raw id replaces it before anything is stored.

The same mapping runs in SQL at ingest (vectorised in DuckDB) and in Python at the API edge, so a
raw id from a request finds the user's stored events. The key never leaves `config.read_secrets()`.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["pseudonymize", "stored_user_id", "pseudonym_sql", "PSEUDONYM_CHARS"]

PSEUDONYM_CHARS = 32  # hex characters kept: 128 bits, collision-free at any realistic user count
_BLOCK = 64  # SHA-256 block size in bytes


def pseudonymize(user_id: str, key: str) -> str:
    """The stored id of a raw user id: the first 128 bits of HMAC-SHA256(key, id), as hex."""
    return hmac.new(key.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]


def stored_user_id(user_id: str, key: str | None) -> str:
    """The id a raw user id is stored under: its pseudonym when a key is configured, else itself."""
    return pseudonymize(user_id, key) if key else user_id


def _blob(data: bytes) -> str:
    return "'" + "".join(f"\\x{b:02x}" for b in data) + "'::BLOB"


def pseudonym_sql(column: str, key: str) -> str:
    """A DuckDB expression computing `pseudonymize(column, key)` (HMAC from SHA-256, RFC 2104)."""
    k = key.encode()
    if len(k) > _BLOCK:
        k = hashlib.sha256(k).digest()
    k = k.ljust(_BLOCK, b"\0")
    inner = _blob(bytes(b ^ 0x36 for b in k))
    outer = _blob(bytes(b ^ 0x5C for b in k))
    return (f"left(sha256({outer} || unhex(sha256({inner} || encode({column})))), {PSEUDONYM_CHARS})")
