"""Bearer-key auth for write and admin endpoints: constant-time comparison, loopback-only without a key."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import HTTPException, Request

__all__ = ["WriteAuth", "is_loopback"]


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class WriteAuth:
    """A FastAPI dependency: `Authorization: Bearer <key>` must carry the configured key.

    401 when the header is missing or malformed, 403 when the key is wrong. With no key configured,
    writes are refused (403) except from loopback clients, so the local demo works and nothing else does.
    """

    def __init__(self, api_key: str | None, allow_loopback_without_key: bool = True) -> None:
        self._key = api_key.encode() if api_key else None
        self.allow_loopback = allow_loopback_without_key

    async def __call__(self, request: Request) -> None:  # async: no thread-pool hop for a string compare
        client = request.client.host if request.client else None
        if self._key is None:
            if self.allow_loopback and is_loopback(client):
                return
            raise HTTPException(403, "writes are disabled: no API key is configured (set FUSIONREC_API_KEY or "
                                     "FUSIONREC_API_KEY_FILE); without one only loopback clients may write")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "this endpoint needs an 'Authorization: Bearer <key>' header",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.strip().encode(), self._key):
            raise HTTPException(403, "the API key is not valid")
