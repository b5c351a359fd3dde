"""Per-dataset model parameters from TOML (the tuned configs under configs/).

Layout: one `[models.NAME]` table per generator, and an optional `[pipeline]` table (with
`[pipeline.generators.NAME]` entries, or a `generators = ["itemknn", ...]` list) for the fused
pipelines `fusion`, `blend`, `rrf` and `best`. A pipeline generator without its own table takes the
tuned `[models.NAME]` parameters, so the fusion stage fuses the tuned generators.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from fusionrec.errors import ConfigError

__all__ = ["read_model_params", "PIPELINE_MODELS"]

PIPELINE_MODELS = ("fusion", "blend", "rrf", "best")


def read_model_params(path: Path | str | None) -> dict[str, dict[str, Any]]:
    """{model name: params} for `evaluate`; pipelines get a resolved `generators` table."""
    if path is None:
        return {}
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the TOML config ({exc})") from None
    models = data.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise ConfigError(f"{path}: expected one [models.NAME] table of parameters per model")
    out = {k: dict(v) for k, v in models.items()}
    pipeline = dict(data.get("pipeline", {}))
    for table in ("generators", "ranker"):  # also accepted at the top level: [generators.NAME], [ranker]
        if table in data and table not in pipeline:
            pipeline[table] = data[table]
    if pipeline:
        if "generators" not in pipeline:
            from fusionrec.pipeline import DEFAULT_GENERATORS

            pipeline["generators"] = list(DEFAULT_GENERATORS)
        gens = pipeline.get("generators", {})
        if isinstance(gens, list):
            gens = {g: {} for g in gens}
        if not isinstance(gens, dict):
            raise ConfigError(f"{path}: [pipeline] generators must be a list of names or tables")
        resolved = {}
        for name, params in gens.items():
            base = dict(out.get(params.get("generator", name), {})) if isinstance(params, dict) else {}
            base.update(params if isinstance(params, dict) else {})
            resolved[name] = base
        if resolved:
            pipeline["generators"] = resolved
        for name in PIPELINE_MODELS:
            out[name] = {**pipeline, **out.get(name, {})}
    return out
