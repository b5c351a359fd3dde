"""Generators by name: what pipeline TOML files and the CLI refer to.

Adding one: call `register(MyGenerator)` (or use it as a class decorator) where the class is defined
and import that module below; a generator whose module pulls in a heavy optional dependency at
import time goes into `LAZY` instead ("name": "module:Class"), loaded on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from fusionrec.candidates.als import ALS, BPR
from fusionrec.candidates.base import CandidateGenerator
from fusionrec.candidates.covisitation import SessionCoVisitation
from fusionrec.candidates.ease import EASE
from fusionrec.candidates.itemknn import ItemKNN
from fusionrec.candidates.popularity import CategoryPopularity, Popularity, Trending
from fusionrec.candidates.content import ContentEmbedding, ContentTfidf
from fusionrec.candidates.repeat import Repeat
from fusionrec.candidates.rp3beta import RP3beta
from fusionrec.candidates.sasrec import SASRec
from fusionrec.candidates.userknn import UserKNN

__all__ = ["GENERATORS", "LAZY", "register", "make", "load_generator", "known_names"]

GENERATORS: dict[str, type[CandidateGenerator]] = {}
#: name -> "module:Class", imported the first time the name is asked for
LAZY: dict[str, str] = {}


def register(cls: type[CandidateGenerator]) -> type[CandidateGenerator]:
    """Add a generator under its `name` (usable as a class decorator); a name maps to one class."""
    known = GENERATORS.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"generator name {cls.name!r} is taken by {known.__module__}.{known.__qualname__}")
    GENERATORS[cls.name] = cls
    return cls


for _cls in (Popularity, Trending, CategoryPopularity, ItemKNN, SessionCoVisitation, UserKNN, RP3beta, EASE, ALS, BPR,
             Repeat, ContentTfidf, ContentEmbedding, SASRec):
    register(_cls)


def _register_pipelines() -> None:
    # the fused pipelines are generators too, so `evaluate --models fusion,blend,rrf,best` just works
    from fusionrec.pipeline import BestSinglePipeline, BlendPipeline, FusedPipeline, RRFPipeline

    for cls in (FusedPipeline, BlendPipeline, RRFPipeline, BestSinglePipeline):
        register(cls)


_register_pipelines()


def known_names() -> list[str]:
    return sorted(set(GENERATORS) | set(LAZY))


def _lookup(name: str) -> type[CandidateGenerator]:
    if name not in GENERATORS and name in LAZY:
        module, _, attr = LAZY[name].partition(":")
        register(getattr(importlib.import_module(module), attr))
    try:
        return GENERATORS[name]
    except KeyError:
        raise ValueError(f"unknown generator {name!r}; known: {', '.join(known_names())}") from None


def make(name: str, params: dict[str, Any] | None = None) -> CandidateGenerator:
    """A new, unfitted generator; `params` are its Config fields (unknown fields are an error)."""
    cls = _lookup(name)
    params = dict(params or {})
    cfg_type = getattr(cls, "Config", None)
    if cfg_type is None:
        if params:
            raise ValueError(f"generator {name!r} takes no parameters, got {sorted(params)}")
        return cls()  # type: ignore[call-arg]
    fields = {f.name for f in dataclasses.fields(cfg_type)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"generator {name!r} has no parameter(s) {unknown}; its parameters: {sorted(fields)}")
    return cls.from_config(params)


def load_generator(folder: Path | str, vocabularies: dict[str, Any] | None = None) -> CandidateGenerator:
    """Load a saved generator of any registered kind: config.json names it (`vocabularies`: shared
    with other loads, see Vocabulary.load)."""
    folder = Path(folder)
    path = folder / "config.json"
    try:
        name = json.loads(path.read_text())["name"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: not a saved generator folder") from None
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: no generator name ({exc}); was it written by CandidateGenerator.save?") from None
    return _lookup(name).load(folder, vocabularies)
