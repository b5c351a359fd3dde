"""A/B tests: deterministic bucketing, impressions, attributed clicks and purchases, two-proportion z-tests.

A user's variant is a pure function of (experiment name, user id): the first 8 bytes of their
SHA-256 read as a number in [0, 1), cut by the variants' cumulative traffic shares. Every list shown
to a user in an experiment is an impression; a later view/click of an item on it (within the
attribution window) makes it clicked, a purchase makes it converted, each at most once.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

__all__ = ["Variant", "Experiment", "ExperimentTracker", "bucket", "two_proportion_z"]

CLICKS = frozenset({"view", "click"})
CONVERSIONS = frozenset({"buy"})


@dataclass(frozen=True)
class Variant:
    """One arm: `model` is "current", a version name of the model directory, or a version folder path."""

    name: str
    model: str
    share: float


@dataclass(frozen=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    attribution_hours: float = 24.0
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError(f"experiment {self.name!r}: needs at least one variant")
        if any(v.share < 0 for v in self.variants) or sum(v.share for v in self.variants) > 1.0 + 1e-9:
            raise ValueError(f"experiment {self.name!r}: shares must be >= 0 and sum to at most 1")
        if len({v.name for v in self.variants}) != len(self.variants):
            raise ValueError(f"experiment {self.name!r}: variant names must differ")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Experiment":
        """From a config table: name, variants = {NAME: {model, share}} or a list of {name, model, share}."""
        raw = data.get("variants", {})
        items = raw.items() if isinstance(raw, dict) else ((v.get("name"), v) for v in raw)
        variants = tuple(Variant(str(n), str(v.get("model", "current")), float(v.get("share", 0.0))) for n, v in items)
        return cls(str(data["name"]), variants, float(data.get("attribution_hours", 24.0)),
                   float(data.get("alpha", 0.05)))

    def assign(self, user_id: str) -> Variant | None:
        """The user's variant, or None when the shares leave them out of the experiment."""
        x = bucket(self.name, user_id)
        cum = 0.0
        for v in self.variants:
            cum += v.share
            if x < cum:
                return v
        return None


def bucket(experiment: str, user_id: str) -> float:
    """A stable number in [0, 1) for (experiment, user)."""
    digest = hashlib.sha256(f"{experiment}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """z statistic of p2 - p1 with the pooled standard error, and its two-sided p-value."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 0.0, 1.0
    z = (x2 / n2 - x1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2.0))


@dataclass
class _Impression:
    experiment: str
    variant: str
    items: frozenset[str]
    at: float
    clicked: bool = False
    converted: bool = False


@dataclass
class _Counts:
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    users: set[str] = field(default_factory=set)


class ExperimentTracker:
    """Impressions and outcomes per experiment and variant, in memory (thread-safe)."""

    def __init__(self, experiments: Iterable[Experiment], per_user: int = 50) -> None:
        self.experiments = {e.name: e for e in experiments}
        self._counts = {(e.name, v.name): _Counts() for e in self.experiments.values() for v in e.variants}
        # users in the order of their newest impression: the oldest are dropped once past every
        # experiment's attribution window, so a long-running server keeps only the recent ones
        self._recent: OrderedDict[str, deque[_Impression]] = OrderedDict()
        self._per_user = per_user
        self._horizon = max((e.attribution_hours * 3600.0 for e in self.experiments.values()), default=0.0)
        self._lock = threading.Lock()

    def assignment(self, user_id: str) -> tuple[Experiment, Variant] | None:
        """The first experiment (in config order) that has a variant for the user."""
        for exp in self.experiments.values():
            v = exp.assign(user_id)
            if v is not None:
                return exp, v
        return None

    def impression(self, experiment: str, variant: str, user_id: str, item_ids: Iterable[str],
                   at: float | None = None) -> None:
        imp = _Impression(experiment, variant, frozenset(item_ids), time.time() if at is None else at)
        with self._lock:
            self._recent.setdefault(user_id, deque(maxlen=self._per_user)).append(imp)
            self._recent.move_to_end(user_id)
            while self._recent:  # users whose newest impression can no longer be attributed
                oldest = next(iter(self._recent.values()))
                if imp.at - oldest[-1].at <= self._horizon:
                    break
                self._recent.popitem(last=False)
            c = self._counts[(experiment, variant)]
            c.impressions += 1
            c.users.add(user_id)

    def event(self, user_id: str, item_id: str, behavior: str, at: float | None = None) -> None:
        """Attribute a user's event to their newest impression that showed the item, if recent enough."""
        if behavior not in CLICKS and behavior not in CONVERSIONS:
            return
        now = time.time() if at is None else at
        with self._lock:
            for imp in reversed(self._recent.get(user_id, ())):
                window = self.experiments[imp.experiment].attribution_hours * 3600.0
                if item_id not in imp.items or now - imp.at > window:
                    continue
                c = self._counts[(imp.experiment, imp.variant)]
                if behavior in CLICKS and not imp.clicked:
                    imp.clicked = True
                    c.clicks += 1
                elif behavior in CONVERSIONS and not imp.converted:
                    imp.converted = True
                    c.conversions += 1
                break

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._recent.pop(user_id, None)
            for c in self._counts.values():
                c.users.discard(user_id)

    def report(self, name: str, versions: dict[str, str | None] | None = None) -> dict[str, Any] | None:
        """Per-variant CTR and conversion, and z-tests of every variant against the first (the control)."""
        exp = self.experiments.get(name)
        if exp is None:
            return None
        with self._lock:
            counts = {v.name: self._counts[(name, v.name)] for v in exp.variants}
            rows = []
            for v in exp.variants:
                c = counts[v.name]
                rows.append({"name": v.name, "model": v.model, "model_version": (versions or {}).get(v.name),
                             "share": v.share, "users": len(c.users), "impressions": c.impressions,
                             "clicks": c.clicks, "ctr": c.clicks / c.impressions if c.impressions else 0.0,
                             "conversions": c.conversions,
                             "conversion_rate": c.conversions / c.impressions if c.impressions else 0.0})
        control = exp.variants[0].name
        tests = []
        c0 = counts[control]
        for v in exp.variants[1:]:
            c = counts[v.name]
            for metric, x0, x1 in (("ctr", c0.clicks, c.clicks), ("conversion_rate", c0.conversions, c.conversions)):
                z, p = two_proportion_z(x0, c0.impressions, x1, c.impressions)
                diff = (x1 / c.impressions if c.impressions else 0.0) - (x0 / c0.impressions if c0.impressions else 0.0)
                significant = p < exp.alpha
                verdict = (f"{v.name} {'beats' if diff > 0 else 'trails'} {control} on {metric} "
                           f"(p = {p:.3g} < {exp.alpha})" if significant else
                           f"no significant difference in {metric} between {v.name} and {control} yet (p = {p:.3g})")
                tests.append({"metric": metric, "control": control, "variant": v.name, "difference": diff,
                              "z": z, "p_value": p, "significant": significant, "summary": verdict})
        return {"name": name, "control": control, "alpha": exp.alpha, "attribution_hours": exp.attribution_hours,
                "variants": rows, "tests": tests}
