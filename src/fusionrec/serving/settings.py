"""Server settings: keys from `read_secrets()`, the rest from an optional TOML file (`fusionrec serve --config`)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fusionrec.errors import ConfigError
from fusionrec.serving.ab import Experiment

__all__ = ["ServingSettings", "load_settings"]


@dataclass
class ServingSettings:
    """What the server needs beyond the model and the store; documented defaults."""

    api_key: str | None = None
    pseudonym_key: str | None = None
    #: bodies over this many bytes get 413 before they are parsed
    max_body_bytes: int = 1 << 20
    #: consumables may be recommended again this many days after their last purchase
    repurchase_days: float = 30.0
    #: retrain from the store every this many minutes (None: only on POST /admin/retrain)
    retrain_every_minutes: float | None = None
    #: check MODEL_DIR/current this often and swap in a version trained elsewhere (None: never)
    reload_poll_seconds: float | None = 10.0
    #: pipeline TOML for retrains (None: the serving version's own config)
    pipeline: Path | None = None
    #: the newest events per user that make up a query
    history_max_events: int = 500
    #: hand freed heap pages back to the OS this often (None: only after a swap); see serving/memory.py
    trim_heap_seconds: float | None = 60.0
    #: keep each user's finished answer this many seconds for their next request, unless the user's
    #: history or the model changed meanwhile (0: compute every answer); see serving/answer_cache.py
    answer_cache_seconds: float = 30.0
    #: at most this many users' answers kept (least recently used dropped; an answer with its reasons is
    #: ~10 KB of Python objects); expired ones leave as new ones come, so it holds about the users asked
    #: for in the last answer_cache_seconds
    answer_cache_users: int = 20_000
    #: DuckDB worker threads once the server has loaded its histories: 1 runs the store's statements
    #: (a group of events is a few rows) on the calling thread instead of handing them to a pool, which
    #: cost more than the work, and leaves the cores to requests; the dashboard's scans and the
    #: retrain's snapshot of the store take longer. 0: as many as `FUSIONREC_THREADS` / the CPUs.
    store_threads: int = 1
    #: without an API key, accept writes from 127.0.0.1 / ::1 (the local demo)
    allow_loopback_writes: bool = True
    experiments: list[Experiment] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("answer_cache_seconds", "answer_cache_users"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"[serving] {name}: a number >= 0 (0 turns the answer cache off), got {value!r}")
        if isinstance(self.store_threads, bool) or not isinstance(self.store_threads, int) or self.store_threads < 0:
            raise ConfigError(f"[serving] store_threads: an integer >= 0 (0: one per CPU), got {self.store_threads!r}")


def load_settings(path: Path | None = None, **overrides: Any) -> ServingSettings:
    """Settings from `[serving]` and `[[experiments]]` of a TOML file, keys from the environment."""
    from fusionrec.config import read_secrets

    body: dict[str, Any] = {}
    experiments: list[Experiment] = []
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the serving config ({exc})") from None
        body = dict(data.get("serving", {}))
        try:
            experiments = [Experiment.from_dict(e) for e in data.get("experiments", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: bad [[experiments]] table ({exc})") from None
        known = {f.name for f in fields(ServingSettings)} - {"api_key", "pseudonym_key", "experiments"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown [serving] keys {unknown}; known: {sorted(known)}")
        if body.get("pipeline"):
            body["pipeline"] = Path(path).parent / body["pipeline"]
    secrets = read_secrets()
    try:
        settings = ServingSettings(api_key=secrets.api_key, pseudonym_key=secrets.pseudonym_key,
                                   experiments=experiments, **body)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for k, v in overrides.items():
        setattr(settings, k, v)
    return settings
