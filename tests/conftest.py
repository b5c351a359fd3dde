from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("FUSIONREC_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FUSIONREC_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; CI runs with ../shared beside the clone")
    return SHARED_DATA
