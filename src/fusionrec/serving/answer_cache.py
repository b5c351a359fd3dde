"""Finished answers of `GET /recommendations/{user}`, kept for a returning visitor.

A shop's pages ask for the same user's recommendations again and again (home page, reloads, the next
page view) while nothing about the user changed. Each answer is kept with everything it depends on:
the model version that ranked it, the user's history revision (`HistoryStore.revision`, bumped by each
of the user's events and by forgetting them), the request's parameters. Any change misses, so an event
still changes the very next answer (the freshness of the feedback loop is untouched); what a cached
answer does not follow is the rest of the shop (trending counts moved by other users), for at most
`seconds`. One entry per user (the latest request's), kept in the order they were put, which is the
order they expire in (every entry lives `seconds`): expired entries leave from the front as new ones
come, and past `users` the oldest answers leave first (those nearest their expiry). A hit does not move
an entry: moved, it would sit behind entries that expire later and outlive its own expiry there.
`forget` drops a user's entry at once (deletion on request).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable

__all__ = ["AnswerCache"]


class AnswerCache:
    """user id -> (key, expiry, answer); thread-safe; `seconds` <= 0 or `users` <= 0 keeps nothing."""

    def __init__(self, seconds: float, users: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = float(seconds)
        self.users = int(users)
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Hashable, float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.seconds > 0 and self.users > 0

    def get(self, user_id: str, key: Hashable) -> Any | None:
        """The answer kept for this user under exactly this key and not expired, else None. The
        caller must not change it: the same object is handed to every hit."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is not None and entry[0] == key and entry[1] > now:
                self.hits += 1
                return entry[2]
            self.misses += 1
            return None

    def put(self, user_id: str, key: Hashable, answer: Any) -> None:
        if not self.enabled:
            return
        now = self._clock()
        with self._lock:
            self._entries[user_id] = (key, now + self.seconds, answer)
            self._entries.move_to_end(user_id)
            # the front expires first: the cache holds the users asked for in the last `seconds` (rate x
            # seconds), not every user ever asked for, and never more than `users`
            while self._entries and (len(self._entries) > self.users
                                     or next(iter(self._entries.values()))[1] <= now):
                self._entries.popitem(last=False)

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._entries.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._entries
