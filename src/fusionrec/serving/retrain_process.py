"""The server's retrain, in a child process: it trains on a snapshot of the store and writes a version.

Training allocates gigabytes and keeps both cores busy for minutes. In the serving process that memory
stays with the process after the swap (the allocator keeps its arenas) and the training threads
compete with requests for the GIL. In a child at lower CPU priority, requests keep their latency
and the server's memory returns to what the models need. The child reads a snapshot copied by the
server (DuckDB opens a file in one process at a time), encrypted with the store's key when the store
is, and deleted afterwards.

Run by the server as `python -m fusionrec.serving.retrain_process SNAPSHOT MODEL_DIR CONFIG_JSON`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from fusionrec.errors import FusionrecError

__all__ = ["train_in_child"]

#: how much lower the child's CPU priority is (POSIX nice increment): the server's requests come first.
#: At 19 the child weighs 15 against a request thread's 1024 in Linux's scheduler (at 10: 110), so a
#: request that wakes up preempts it at once; the child still has every idle cycle
CHILD_NICENESS = 19


def _lower_priority() -> None:  # pragma: no cover - runs in the child before exec
    try:
        os.nice(CHILD_NICENESS)
    except OSError:
        pass


def train_in_child(snapshot: Callable[[Path], None], model_dir: Path, config: Any,
                   timeout: float | None = None) -> Path:
    """Write a snapshot of the store with `snapshot(path)` (e.g. `EventStore.snapshot`), train a version of
    `model_dir` from it in a child process (not made current), and return the version folder. Raises
    FusionrecError with the child's last words if it fails."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fusionrec-retrain-") as tmp:
        snap = Path(tmp) / "snapshot.duckdb"
        snapshot(snap)
        cmd = [sys.executable, "-m", "fusionrec.serving.retrain_process", str(snap), str(model_dir),
               json.dumps(dataclasses.asdict(config))]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
                              preexec_fn=_lower_priority if os.name == "posix" else None)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-5:])
        raise FusionrecError(f"the retrain process failed (exit {proc.returncode}): {tail}")
    try:
        return Path(json.loads(proc.stdout.strip().splitlines()[-1])["version_path"])
    except (ValueError, KeyError, IndexError):
        raise FusionrecError(f"the retrain process gave no version: {proc.stdout[-500:]!r}") from None


def main(argv: list[str]) -> int:
    from fusionrec.pipeline import PipelineConfig
    from fusionrec.serving.training import train_version
    from fusionrec.store.open import open_store

    snapshot, model_dir, config = argv
    try:
        cfg = PipelineConfig(**json.loads(config))
        with open_store(snapshot, must_exist=True, read_only=True) as store:
            folder = train_version(store, Path(model_dir), cfg, make_current=False)
    except FusionrecError as exc:  # a known problem: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"version_path": str(folder)}))
    return 0


if __name__ == "__main__":  # pragma: no cover - the child's entry point
    sys.exit(main(sys.argv[1:]))
