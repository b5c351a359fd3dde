"""Request body size limit, enforced before anything parses the body."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

__all__ = ["BodyLimit"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: 413 for bodies over `max_bytes`.

    A Content-Length over the limit is refused at once, without reading the body; a body without
    one (chunked) is read up to the limit and refused as soon as it passes it. The body read here is
    replayed to the app, so the limit holds whatever the route does with it.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int = 1 << 20) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await self._refuse(send, 400, "Content-Length is not a number")
                    return
        limit = self.max_bytes
        if length is not None and length > limit:
            await self._refuse(send, 413, f"request body of {length} bytes is over the limit of {limit} bytes")
            return
        if length == 0 or (length is None and scope.get("method") in ("GET", "HEAD", "OPTIONS")):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, 413, f"request body is over the limit of {limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
