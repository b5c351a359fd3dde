"""The canonical tables, columns and behaviour vocabulary of fusionrec.

Every other module names columns through this one, so a column is renamed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = [
    "USER_ID", "ITEM_ID", "BEHAVIOR", "TIMESTAMP", "SESSION_ID", "QUANTITY", "PRICE", "CONTEXT",
    "SEQ", "SPLIT", "SOURCE", "LINE", "REASON",
    "EVENT_COLUMNS", "OPTIONAL_EVENT_COLUMNS", "REQUIRED_EVENT_COLUMNS",
    "ITEM_COLUMNS", "USER_COLUMNS", "TITLE", "CATEGORY", "BRAND", "AVAILABLE", "ATTRIBUTES", "TEXT",
    "DEFAULT_BEHAVIOR_WEIGHTS", "BEHAVIOR_ALIASES", "FUNNEL", "BehaviorVocabulary",
]

# events
USER_ID = "user_id"
ITEM_ID = "item_id"
BEHAVIOR = "behavior"
TIMESTAMP = "timestamp"  # TIMESTAMP (UTC) in the store; NULL where the source has order only
SESSION_ID = "session_id"
QUANTITY = "quantity"
PRICE = "price"
CONTEXT = "context"
SEQ = "seq"  # position in the source: breaks ties and orders logs that have no timestamps
SPLIT = "split"  # 'train' / 'valid' / 'test' for datasets that ship their own split, else NULL
SOURCE = "source"  # file the row came from
LINE = "line"  # 1-based physical line in that file
REASON = "reason"  # why a row was quarantined

REQUIRED_EVENT_COLUMNS = (USER_ID, ITEM_ID, BEHAVIOR, TIMESTAMP)
OPTIONAL_EVENT_COLUMNS = (SESSION_ID, QUANTITY, PRICE, CONTEXT)
EVENT_COLUMNS = REQUIRED_EVENT_COLUMNS + OPTIONAL_EVENT_COLUMNS

# items (catalogue)
TITLE = "title"
CATEGORY = "category"  # a path such as "electronics/phones"
BRAND = "brand"
AVAILABLE = "available"
ATTRIBUTES = "attributes"  # free attributes, JSON text
TEXT = "text"  # description
ITEM_COLUMNS = (ITEM_ID, TITLE, CATEGORY, BRAND, PRICE, AVAILABLE, ATTRIBUTES, TEXT)

# users
USER_COLUMNS = (USER_ID, ATTRIBUTES)

DEFAULT_BEHAVIOR_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"view": 1.0, "click": 1.0, "fav": 2.0, "cart": 3.0, "buy": 5.0}
)
BEHAVIOR_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "pv": "view", "page_view": "view", "pageview": "view", "impression_click": "click",
        "favorite": "fav", "favourite": "fav", "like": "fav", "wishlist": "fav",
        "addtocart": "cart", "add_to_cart": "cart", "add-to-cart": "cart",
        "transaction": "buy", "purchase": "buy", "order": "buy", "review": "buy",
    }
)
# the purchase funnel, in order; stats report conversion between consecutive steps
FUNNEL = ("view", "cart", "buy")


@dataclass(frozen=True)
class BehaviorVocabulary:
    """An open vocabulary of behaviour types with weights and aliases.

    `weights` holds every accepted canonical behaviour; `aliases` maps raw names onto them.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BEHAVIOR_WEIGHTS))
    aliases: Mapping[str, str] = field(default_factory=lambda: dict(BEHAVIOR_ALIASES))

    def canonical(self, raw: str) -> str | None:
        """The canonical name of a raw behaviour, or None when it is unknown."""
        name = raw.strip().lower()
        name = self.aliases.get(name, name)
        return name if name in self.weights else None

    def weight(self, behavior: str) -> float:
        return float(self.weights[behavior])

    def with_weights(self, extra: Mapping[str, float]) -> "BehaviorVocabulary":
        merged = dict(self.weights)
        merged.update({k.strip().lower(): float(v) for k, v in extra.items()})
        return BehaviorVocabulary(weights=merged, aliases=dict(self.aliases))
