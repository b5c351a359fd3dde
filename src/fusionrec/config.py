"""The one place that reads environment variables and configuration files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Secrets", "read_secrets", "thread_count"]


@dataclass(frozen=True)
class Secrets:
    api_key: str | None = None
    pseudonym_key: str | None = None
    store_key: str | None = None


def _from_env_or_file(name: str) -> str | None:
    value = os.environ.get(name)
    if value:
        return value.strip()
    file = os.environ.get(f"{name}_FILE")
    if file and Path(file).is_file():
        return Path(file).read_text(encoding="utf-8").strip() or None
    return None


def read_secrets() -> Secrets:
    """Keys from FUSIONREC_API_KEY, FUSIONREC_PSEUDONYM_KEY, FUSIONREC_STORE_KEY (or their *_FILE)."""
    return Secrets(
        api_key=_from_env_or_file("FUSIONREC_API_KEY"),
        pseudonym_key=_from_env_or_file("FUSIONREC_PSEUDONYM_KEY"),
        store_key=_from_env_or_file("FUSIONREC_STORE_KEY"),
    )


def thread_count() -> int:
    """Worker threads for DuckDB and numeric code: FUSIONREC_THREADS or the CPU count."""
    value = os.environ.get("FUSIONREC_THREADS")
    return max(1, int(value)) if value and value.isdigit() else max(1, os.cpu_count() or 1)
