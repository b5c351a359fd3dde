"""Request and response bodies of the HTTP API; every string and list is bounded."""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, with_config
from typing_extensions import TypedDict

__all__ = ["Id", "EventIn", "EventBatch", "SessionRequest", "RecommendedItem", "Recommendations", "SimilarItems",
           "Rejection", "EventsResult", "Health", "ForgetResult", "MAX_ID", "MAX_K", "MAX_BATCH"]

MAX_ID = 256
MAX_K = 100
MAX_BATCH = 1000

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID)]
_IdOrNumber = Union[Annotated[str, StringConstraints(max_length=MAX_ID)], StrictInt]
_Finite = Annotated[float, Field(allow_inf_nan=False)]


@with_config(ConfigDict(extra="ignore"))
class EventIn(TypedDict, total=False):
    """One event. Missing ids, unknown behaviours and bad timestamps are not 422s: the event is rejected
    with its index and reason (the ingest rules), the rest of the batch goes in. A TypedDict, not a
    model: validated straight into the dict the store's writer takes (a batch of 500 in half the time)."""

    user_id: Optional[_IdOrNumber]
    item_id: Optional[_IdOrNumber]
    behavior: Optional[Annotated[str, StringConstraints(max_length=64)]]
    timestamp: Annotated[Optional[Union[Annotated[str, StringConstraints(max_length=64)], StrictInt, _Finite]],
                         Field(description="ISO 8601 (an offset is honoured, else UTC) or epoch "
                                           "seconds/milliseconds; default: now")]
    session_id: Optional[Annotated[str, StringConstraints(max_length=MAX_ID)]]
    quantity: Optional[StrictInt]
    price: Optional[_Finite]
    context: Optional[Annotated[str, StringConstraints(max_length=4096)]]


EventBatch = Union[Annotated[list[EventIn], Field(max_length=MAX_BATCH)], EventIn]


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: Annotated[list[Id], Field(max_length=MAX_K)] = Field(description="item ids the visitor viewed, oldest first")
    k: int = Field(10, ge=1, le=MAX_K)


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    reasons: list[dict[str, Any]] = Field(
        description="why: {type: generator, generator, rank}, {type: history, item_id, behavior, text}, "
                    "{type: fallback, fallback, text} or {type: similar_to, item_id, text}")


class Recommendations(BaseModel):
    user_id: Optional[str]
    model_version: Optional[str]
    items: list[RecommendedItem]


class SimilarItems(BaseModel):
    item_id: str
    model_version: Optional[str]
    items: list[RecommendedItem]


class Rejection(BaseModel):
    index: int
    reason: str


class EventsResult(BaseModel):
    accepted: int
    rejected: list[Rejection]


class Health(BaseModel):
    status: str
    model_version: Optional[str]
    model_loaded: bool
    retrain: dict[str, Any]
    live_events: int


class ForgetResult(BaseModel):
    user_id: str
    events_deleted: int
    model_versions_updated: list[str]
