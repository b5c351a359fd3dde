"""Crash safety: `fusionrec serve` killed with SIGKILL while clients stream events loses no acknowledged event,
duplicates none, and restarts cleanly on the same store.

Each event carries a client-made id in its `context` field (the contract has no event-id field; `context` is
stored with the event), so the store can be checked event by event afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from _serving_shop import fresh_copy
from fusionrec.store.event_store import EventStore

KEY = "crash-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model: Path, store: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "FUSIONREC_API_KEY": KEY}
    fh = open(log, "a")
    proc = subprocess.Popen([sys.executable, "-m", "fusionrec.cli", "serve", "--model", str(model), "--store",
                             str(store), "--port", str(port)], env=env, stdout=fh, stderr=subprocess.STDOUT)
    fh.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=base, timeout=5) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if c.get("/health").status_code == 200:
                    return proc, base
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the server did not start:\n{log.read_text()[-3000:]}")


class Streamer:
    """A client thread posting events (alone and in batches) until stopped; remembers what was acknowledged."""

    def __init__(self, base: str, worker: int) -> None:
        self.base, self.worker = base, worker
        self.acked: list[str] = []
        self.sent: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _event(self, n: int) -> dict:
        eid = f"w{self.worker}-e{n}"
        self.sent.append(eid)
        return {"user_id": f"crash-u{n % 37}", "item_id": f"i{(n * 7 + self.worker) % 150:05d}",
                "behavior": ("view", "cart", "buy")[n % 3], "timestamp": 1_767_600_000 + n, "context": eid}

    def _run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.base, timeout=10, headers=AUTH) as c:
            while not self.stop.is_set():
                size = 1 if n % 4 == 0 else 1 + n % 25
                batch = [self._event(n + j) for j in range(size)]
                n += size
                body = batch[0] if size == 1 else batch
                try:
                    r = c.post("/events", json=body)
                except httpx.TransportError:
                    return  # the server died: this batch was never acknowledged
                if r.status_code == 200:
                    out = r.json()
                    assert out["rejected"] == [], out
                    self.acked.extend(e["context"] for e in batch)


def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path):
    store, model = fresh_copy(tmp_path)
    log = tmp_path / "server.log"
    proc, base = _start(model, store, log)
    streamers = [Streamer(base, w) for w in range(4)]
    try:
        for s in streamers:
            s.thread.start()
        deadline = time.monotonic() + 20
        while sum(len(s.acked) for s in streamers) < 1500 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: requests are in flight
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    for s in streamers:
        s.stop.set()
        s.thread.join(timeout=15)
    acked = [eid for s in streamers for eid in s.acked]
    sent = {eid for s in streamers for eid in s.sent}
    assert len(acked) >= 100, "too few events were acknowledged before the kill to test anything"

    proc, base = _start(model, store, log)  # the same store, after the crash
    try:
        with httpx.Client(base_url=base, timeout=10, headers=AUTH) as c:
            assert c.get("/health").json()["model_loaded"]
            r = c.post("/events", json={"user_id": "crash-after", "item_id": "i00001", "behavior": "view",
                                        "context": "after-restart"})
            assert r.status_code == 200 and r.json()["accepted"] == 1
            assert c.get("/recommendations/crash-u1", params={"k": 5}).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    with EventStore(store, read_only=True) as st:  # opens cleanly after a crash and a restart
        rows = st.con.execute("SELECT context, count(*) FROM events WHERE source = 'api' GROUP BY context").fetchall()
    stored = dict(rows)
    missing = [eid for eid in acked if eid not in stored]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:5]}"
    dupes = {eid: n for eid, n in stored.items() if n > 1}
    assert not dupes, f"duplicated events: {list(dupes.items())[:5]}"
    assert set(stored) - {"after-restart"} <= sent  # nothing that was never sent
    assert stored.get("after-restart") == 1
