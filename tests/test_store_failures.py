"""A store that cannot write (read-only, disk full, I/O errors): events get 503 with the cause, are never
acknowledged and then lost, and the server takes events again once the store can write."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import duckdb
import pytest
from fastapi.testclient import TestClient

from _serving_shop import fresh_copy
from fusionrec.serving.app import create_app
from fusionrec.serving.settings import ServingSettings
from fusionrec.store.event_store import EventStore

KEY = "store-failure-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _events(tag: str, n: int = 3) -> list[dict]:
    return [{"user_id": "sf-user", "item_id": f"i{j:05d}", "behavior": "view", "context": f"{tag}-{j}"}
            for j in range(n)]


def _stored(store_path, tag: str) -> int:
    with EventStore(store_path, read_only=True) as st:
        return st.con.execute("SELECT count(*) FROM events WHERE starts_with(context, ?)", [tag]).fetchone()[0]


class FailingWrites:
    """The store's connection, except that COMMIT fails the way a full disk makes it fail."""

    def __init__(self, con, exc: BaseException) -> None:
        self._con, self._exc = con, exc

    def execute(self, sql, *args, **kwargs):
        if sql.strip().upper() == "COMMIT":
            raise self._exc
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._con, name)


@pytest.fixture()
def served(tmp_path):
    store, model = fresh_copy(tmp_path)
    app = create_app(model, store, ServingSettings(api_key=KEY, reload_poll_seconds=None))
    yield app, store
    app.state.server.close()


@pytest.mark.parametrize("exc, cause", [
    (duckdb.IOException("Could not write file \"store.duckdb.wal\": No space left on device"), "disk"),
    (OSError(errno.ENOSPC, "No space left on device"), "disk"),
    (duckdb.IOException("Could not write file \"store.duckdb.wal\": Input/output error"), "could not write"),
])
def test_disk_full_gives_503_and_nothing_is_acknowledged(served, exc, cause):
    app, store_path = served
    state = app.state.server
    client = TestClient(app)
    live_before = state.histories.live_events
    good = state.store.con
    state.store.con = FailingWrites(good, exc)
    try:
        r = client.post("/events", json=_events("full"), headers=AUTH)
        assert r.status_code == 503, r.text
        assert cause in r.json()["detail"] and "nothing was stored" in r.json()["detail"]
        assert r.headers.get("retry-after")
        r = client.post("/events", json=_events("full-one", 1)[0], headers=AUTH)
        assert r.status_code == 503
    finally:
        state.store.con = good
    assert state.histories.live_events == live_before  # refused events are not in anyone's history either
    r = client.post("/events", json=_events("freed"), headers=AUTH)  # space again: writes work
    assert r.status_code == 200 and r.json()["accepted"] == 3
    state.close()
    assert _stored(store_path, "full") == 0 and _stored(store_path, "freed") == 3


def test_read_only_store_gives_503_with_the_reason(tmp_path):
    store_path, model = fresh_copy(tmp_path)
    with EventStore(store_path, read_only=True) as ro:
        app = create_app(model, ro, ServingSettings(api_key=KEY, reload_poll_seconds=None))
        try:
            client = TestClient(app)
            r = client.post("/events", json=_events("ro"), headers=AUTH)
            assert r.status_code == 503, r.text
            assert "read-only" in r.json()["detail"]
            assert client.get("/recommendations/u000007").status_code == 200  # reads keep working
            r = client.delete("/users/u000007", headers=AUTH)
            assert r.status_code == 503 and "read-only" in r.json()["detail"]
        finally:
            app.state.server.writer.close()
    assert _stored(store_path, "ro") == 0


_REAL_IO_FAILURE = textwrap.dedent("""
    import json, resource, signal, sys
    from fastapi.testclient import TestClient
    from fusionrec.serving.app import create_app
    from fusionrec.serving.settings import ServingSettings
    store, model, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = create_app(model, store, ServingSettings(api_key="k", reload_poll_seconds=None))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    c = TestClient(app, raise_server_exceptions=False)
    acked, statuses, details = [], [], []
    for n in range(400):
        batch = [{"user_id": "rl-user", "item_id": f"i{j:05d}", "behavior": "view", "context": f"rl-{n}-{j}"}
                 for j in range(20)]
        r = c.post("/events", json=batch, headers={"Authorization": "Bearer k"})
        statuses.append(r.status_code)
        if r.status_code == 200:
            acked.extend(e["context"] for e in batch)
        else:
            details.append(r.json().get("detail"))
        if statuses.count(503) >= 3:
            break
    print(json.dumps({"acked": acked, "statuses": statuses, "details": details[:3]}))
    sys.stdout.flush()
    import os; os._exit(0)  # as after a crash: whatever was acknowledged must be in the store
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_real_write_failures_never_lose_acknowledged_events(tmp_path):
    """The WAL hits a file-size limit (a real failing write() under DuckDB, no root needed)."""
    store_path, model = fresh_copy(tmp_path)
    limit = 256 * 1024  # the WAL may grow this far; the main file is not written before a checkpoint
    out = subprocess.run([sys.executable, "-c", _REAL_IO_FAILURE, str(store_path), str(model), str(limit)],
                         capture_output=True, text=True, timeout=120, env={**os.environ})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    statuses = res["statuses"]
    assert 500 not in statuses, (statuses, out.stderr[-2000:])
    assert 503 in statuses, f"the size limit was never hit: {statuses}"
    assert all("disk" in d and "nothing was stored" in d for d in res["details"]), res["details"]
    assert res["acked"], "nothing was acknowledged before the limit"
    with EventStore(store_path, read_only=True) as st:
        stored = dict(st.con.execute("SELECT context, count(*) FROM events WHERE starts_with(context, 'rl-') "
                                     "GROUP BY context").fetchall())
    missing = [c for c in res["acked"] if c not in stored]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"
    assert all(v == 1 for v in stored.values())
