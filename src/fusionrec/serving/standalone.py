"""Answers without a running server: `fusionrec recommend` loads a version and asks it directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionrec.rerank.rules import RerankConfig
from fusionrec.serving.histories import HistoryStore
from fusionrec.serving.model import ServingModel
from fusionrec.serving.recommender import Recommender
from fusionrec.serving.versions import load_version

__all__ = ["recommend_offline"]


def recommend_offline(model: Path, user_id: str, k: int = 10, store: Path | None = None,
                      category: str | None = None) -> dict[str, Any]:
    """The same answer as GET /recommendations/{user_id}: from the store's history when `store` is
    given, else from the history the model was trained on."""
    loaded = load_version(model)
    if store is not None:
        from fusionrec.store.open import open_store

        with open_store(store, must_exist=True, read_only=True) as st:
            histories = HistoryStore.from_store(st)
    else:
        histories = HistoryStore.from_model(loaded.pipeline, user_id)
    serving = ServingModel(loaded, histories, RerankConfig())
    items = Recommender(histories).for_user(serving, user_id, k, category=category)
    return {"user_id": user_id, "model_version": serving.version, "items": items}
