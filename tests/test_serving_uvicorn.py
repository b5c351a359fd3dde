"""One test against the real thing: `fusionrec serve` as its own process on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from _serving_shop import fresh_copy
from fusionrec.store.event_store import EventStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_by_uvicorn(tmp_path):
    store, model = fresh_copy(tmp_path)
    port = _free_port()
    env = {**os.environ, "FUSIONREC_API_KEY": "uvicorn-key"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "fusionrec.cli", "serve", "--model", str(model), "--store",
                             str(store), "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as c:
            for _ in range(300):
                try:
                    if c.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise AssertionError((tmp_path / "server.log").read_text())
                time.sleep(0.1)
            assert c.get("/health").json()["model_loaded"]
            before = c.get("/recommendations/u000007", params={"k": 5}).json()
            assert len(before["items"]) == 5
            top = before["items"][0]["item_id"]
            assert c.post("/events", json={"user_id": "u000007", "item_id": top, "behavior": "buy"}).status_code == 401
            auth = {"Authorization": "Bearer uvicorn-key"}
            r = c.post("/events", json=[{"user_id": "u000007", "item_id": top, "behavior": "buy"}], headers=auth)
            assert r.json() == {"accepted": 1, "rejected": []}
            after = c.get("/recommendations/u000007", params={"k": 5}).json()
            assert top not in [it["item_id"] for it in after["items"]]
            big = b"[" + b" " * 2_000_000 + b"]"
            r = c.post("/events", content=big, headers={**auth, "content-type": "application/json"})
            assert r.status_code == 413
            assert "fusionrec_events_ingested_total 1.0" in c.get("/metrics").text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    with EventStore(store, read_only=True) as st:  # the acknowledged event survived the shutdown
        n = st.con.execute("SELECT count(*) FROM events WHERE user_id = 'u000007' AND source = 'api'").fetchone()[0]
    assert n == 1
