"""Evaluation protocols: how one event log becomes training data, test targets and a validation split.

Every protocol returns `Split`s whose rows are named by their position in `dataset.events`
(`train_rows`, `test_rows`), so a test can prove that no held-out row reached training. The
validation split of every protocol is carved from the training rows only: tune on `split.valid`,
report on `split`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Iterator, Protocol

import numpy as np
import polars as pl
import scipy.sparse as sp

from fusionrec import schema as S
from fusionrec.data.interactions import ITEM_IDX, USER_IDX, Interactions
from fusionrec.data.vocabulary import Vocabulary

__all__ = [
    "DatasetLike", "EvaluationError", "Split", "PROTOCOLS",
    "given_split", "temporal_split", "leave_last_out_split", "kfold_splits", "make_splits",
]

PROTOCOLS = ("given", "temporal", "leave-last-out", "kfold")

ROW = "_row"  # position of the event in dataset.events
_POS = "_pos"  # 0-based position in the user's ordered history
_LEN = "_len"  # the user's number of events
_EVENT_COLUMNS = [S.USER_ID, S.ITEM_ID, S.BEHAVIOR, S.TIMESTAMP, S.SEQ]
_HOLDOUT_FRACTION = 0.2


class EvaluationError(ValueError):
    """A problem with the evaluation request that the person running it can fix (bad protocol, no timestamps...)."""


class DatasetLike(Protocol):
    """What the protocols need of `fusionrec.data.loading.Dataset`."""

    name: str
    format: str
    events: pl.DataFrame
    items: pl.DataFrame | None
    has_timestamps: bool
    checksum: str


@dataclass
class Split:
    """One train/test split, with the evaluated users in rows.

    `users[r]` is the train user index of evaluated row r (-1 for a visitor unknown to training, such as
    a test session, whose history is the start of that session). `histories` [U, train.n_items] is what
    the model sees at recommendation time, and `seen` [U, train.n_items] the items excluded from its
    lists when `exclude_seen`; `targets` [U, len(target_items)] marks the held-out items.
    Target columns >= train.n_items are items unknown to training: they count in recall's denominator
    but can never be recommended (the LightGCN convention).
    """

    protocol: str
    train: Interactions
    users: np.ndarray
    user_ids: list[str]
    histories: sp.csr_matrix
    targets: sp.csr_matrix
    target_items: Vocabulary
    exclude_seen: bool
    description: str
    seen: sp.csr_matrix  # [U, train.n_items] binary: history items with a target behaviour
    train_rows: np.ndarray  # rows of dataset.events used for training
    test_rows: np.ndarray  # rows of dataset.events held out (targets, and session prefixes used as queries)
    fold: int | None = None
    _valid_factory: Callable[[], "Split | None"] | None = field(default=None, repr=False)
    _valid: "Split | None" = field(default=None, repr=False)
    _valid_built: bool = field(default=False, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Items a model can recommend (train's item vocabulary)."""
        return self.train.n_items

    @property
    def exclude(self) -> sp.csr_matrix | None:
        """Rows of items each user must not be recommended (`seen`), or None when repeats count."""
        return self.seen if self.exclude_seen else None

    @property
    def valid(self) -> "Split | None":
        """The validation split, carved from this split's training rows only; built on first use."""
        if not self._valid_built:
            self._valid = self._valid_factory() if self._valid_factory is not None else None
            self._valid_built = True
        return self._valid

    @property
    def valid_train(self) -> Interactions | None:
        v = self.valid
        return v.train if v is not None else None

    @property
    def valid_targets(self) -> sp.csr_matrix | None:
        v = self.valid
        return v.targets if v is not None else None


# -- the protocols ------------------------------------------------------------------------------

def given_split(ds: DatasetLike, exclude_seen: bool = True, seed: int = 0) -> Split:
    """The dataset's own split: rows with split == "test" are targets, the rest train.

    Rows marked "valid" join the final training data and form the validation split. Without them, when
    the test users are new sessions, the newest training sessions (over the test window's length) are
    the validation sessions; otherwise 20% of each training user's events with a target behaviour are
    held out (the newest, or random without time). Test users unknown to training (sessions) are
    queried with their session minus its last event, which is the target.
    """
    ev = _prepare(ds)
    split = ev[S.SPLIT]
    is_test = (split == "test").fill_null(False)
    if not bool(is_test.any()):
        raise EvaluationError(
            f"dataset {ds.name!r} ({ds.format}) ships no test split; "
            "use --protocol temporal, leave-last-out or kfold")
    is_valid = (split == "valid").fill_null(False)
    train_f = ev.filter(~is_test)
    test_f = ev.filter(is_test)

    def valid() -> Split:
        if bool(is_valid.any()):
            return _build_split("given/valid", ev.filter(~is_test & ~is_valid), ev.filter(is_valid), ds.items,
                                exclude_seen, "the dataset's validation rows", sessions=True)
        test_users = test_f[S.USER_ID].unique()
        known_share = float(test_users.is_in(train_f[S.USER_ID].unique().implode()).mean() or 0.0)
        timed = test_f[S.TIMESTAMP].null_count() < test_f.height and train_f[S.TIMESTAMP].null_count() == 0
        if known_share < 0.5 and timed:
            v = _session_validation(train_f, test_f, ds, exclude_seen)
            if v is not None:
                return v
        return _holdout_validation(train_f, ds, exclude_seen, seed,
                                   test_f[S.BEHAVIOR].drop_nulls().unique().to_list())

    return _build_split("given", train_f, test_f, ds.items, exclude_seen,
                        f"the dataset's own split ({test_f.height} test rows)", sessions=True,
                        valid_factory=valid)


def temporal_split(ds: DatasetLike, test_days: float | None, exclude_seen: bool = True) -> Split:
    """One global time cut at max(timestamp) - test_days: events after it are test, for users seen before it.

    Events without a timestamp are left out of both sides. The validation split cuts the training
    rows the same way, `test_days` before their newest event.
    """
    if test_days is None or not test_days > 0:
        raise EvaluationError("the temporal protocol needs --test-days D with D > 0")
    ev = _prepare(ds)
    if ev[S.TIMESTAMP].null_count() == ev.height:
        raise EvaluationError(
            f"dataset {ds.name!r} ({ds.format}) has no timestamps, so a time cut is impossible; "
            "use --protocol leave-last-out, kfold or given")
    timed = ev.filter(pl.col(S.TIMESTAMP).is_not_null())
    return _temporal(timed, ds, float(test_days), exclude_seen, "temporal")


def leave_last_out_split(ds: DatasetLike, exclude_seen: bool = True) -> Split:
    """Each user's last event (by timestamp, then source order) is test and the one before it validation.

    Users with fewer than 3 events keep them all in training (the SASRec / S3-Rec protocol).
    """
    ev = _ordered(_prepare(ds))
    last = (pl.col(_LEN) >= 3) & (pl.col(_POS) == pl.col(_LEN) - 1)
    train_f = ev.filter(~last)
    test_f = ev.filter(last)

    def valid() -> Split:
        # the last training event of the tested users (>= 3 events overall, so >= 2 left in training)
        tr = _ordered(train_f.drop(_POS).rename({_LEN: "_n_all"}))
        vlast = (pl.col("_n_all") >= 3) & (pl.col(_POS) == pl.col(_LEN) - 1)
        return _build_split("leave-last-out/valid", tr.filter(~vlast), tr.filter(vlast), ds.items, exclude_seen,
                            "each user's second-to-last event")

    return _build_split("leave-last-out", train_f, test_f, ds.items, exclude_seen,
                        "each user's last event (users with >= 3 events)", valid_factory=valid)


def kfold_splits(ds: DatasetLike, folds: int = 5, seed: int = 0, exclude_seen: bool = True) -> Iterator[Split]:
    """N folds over users: each test user's newest 20% of events are targets, the older 80% stay in training.

    Users with a single event are never tested. The validation split of fold f holds out the newest
    20% of the next fold's users, from fold f's training rows.
    """
    if folds < 2:
        raise EvaluationError(f"--folds must be at least 2, not {folds}")
    ev = _ordered(_prepare(ds))
    user_ids = ev[S.USER_ID].unique(maintain_order=True)
    rng = np.random.default_rng(seed)
    fold_of = pl.DataFrame({S.USER_ID: user_ids, "_fold": rng.permutation(len(user_ids)) % folds})
    ev = ev.join(fold_of, on=S.USER_ID, how="left", maintain_order="left")
    held = pl.col(_POS) >= pl.col(_LEN) - _n_held_out(pl.col(_LEN))
    for f in range(folds):
        is_test = (pl.col("_fold") == f) & held
        train_f = ev.filter(~is_test)
        test_f = ev.filter(is_test)

        def valid(train_f: pl.DataFrame = train_f, f: int = f) -> Split:
            tr = _ordered(train_f.drop(_POS, _LEN))
            v = (pl.col("_fold") == (f + 1) % folds) & (pl.col(_POS) >= pl.col(_LEN) - _n_held_out(pl.col(_LEN)))
            return _build_split("kfold/valid", tr.filter(~v), tr.filter(v), ds.items, exclude_seen,
                                f"newest 20% of fold {(f + 1) % folds + 1}'s users, from fold {f + 1}'s training rows")

        yield _build_split("kfold", train_f, test_f, ds.items, exclude_seen,
                           f"fold {f + 1}/{folds}: newest 20% of its users' events", fold=f, valid_factory=valid)


def make_splits(ds: DatasetLike, protocol: str, *, test_days: float | None = None, exclude_seen: bool = True,
                folds: int = 5, seed: int = 0) -> Iterator[Split]:
    """The split(s) of a protocol by name: one for given/temporal/leave-last-out, `folds` for kfold."""
    if protocol == "given":
        yield given_split(ds, exclude_seen=exclude_seen, seed=seed)
    elif protocol == "temporal":
        yield temporal_split(ds, test_days, exclude_seen=exclude_seen)
    elif protocol in ("leave-last-out", "leave_last_out", "loo"):
        yield leave_last_out_split(ds, exclude_seen=exclude_seen)
    elif protocol == "kfold":
        yield from kfold_splits(ds, folds=folds, seed=seed, exclude_seen=exclude_seen)
    else:
        raise EvaluationError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


# -- building blocks ----------------------------------------------------------------------------

def _n_held_out(n: pl.Expr) -> pl.Expr:
    """max(1, floor(0.2 n)) events held out of a history of n >= 2; none of a single event."""
    return pl.when(n >= 2).then(pl.max_horizontal((n * _HOLDOUT_FRACTION).floor().cast(pl.Int64), pl.lit(1))) \
        .otherwise(0)


def _prepare(ds: DatasetLike) -> pl.DataFrame:
    """The event table with every column the protocols use, plus each row's position in `ds.events`."""
    ev = ds.events
    if ev.height == 0:
        raise EvaluationError(f"dataset {ds.name!r} has no events")
    missing = [c for c in (S.USER_ID, S.ITEM_ID) if c not in ev.columns]
    if missing:
        raise EvaluationError(f"dataset {ds.name!r} events lack column(s) {', '.join(missing)}")
    cols = [pl.col(S.USER_ID).cast(pl.Utf8), pl.col(S.ITEM_ID).cast(pl.Utf8)]
    cols.append(pl.col(S.BEHAVIOR).cast(pl.Utf8) if S.BEHAVIOR in ev.columns else pl.lit("buy").alias(S.BEHAVIOR))
    cols.append(pl.col(S.TIMESTAMP) if S.TIMESTAMP in ev.columns
                else pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias(S.TIMESTAMP))
    cols.append(pl.col(S.SEQ).cast(pl.Int64) if S.SEQ in ev.columns
                else pl.int_range(pl.len(), dtype=pl.Int64).alias(S.SEQ))
    cols.append(pl.col(S.SPLIT).cast(pl.Utf8) if S.SPLIT in ev.columns
                else pl.lit(None, dtype=pl.Utf8).alias(S.SPLIT))
    return ev.select(cols).with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))


def _ordered(ev: pl.DataFrame, seed: int | None = None) -> pl.DataFrame:
    """Sorted by user then history order (timestamp, then source order; or random with a seed), with _pos/_len."""
    if seed is None:
        ev = ev.sort([S.USER_ID, S.TIMESTAMP, S.SEQ, ROW], nulls_last=True)
    else:
        key = np.random.default_rng(seed).random(ev.height)
        ev = ev.with_columns(pl.Series("_rand", key)).sort([S.USER_ID, "_rand"]).drop("_rand")
    return ev.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).over(S.USER_ID).alias(_POS),
        pl.len().over(S.USER_ID).cast(pl.Int64).alias(_LEN),
    )


def _temporal(ev: pl.DataFrame, ds: DatasetLike, test_days: float, exclude_seen: bool, protocol: str) -> Split:
    newest = ev[S.TIMESTAMP].max()
    cut = newest - timedelta(days=test_days)  # type: ignore[operator]
    after = pl.col(S.TIMESTAMP) > pl.lit(cut, dtype=ev.schema[S.TIMESTAMP])
    train_f = ev.filter(~after)
    test_f = ev.filter(after)
    valid_factory: Callable[[], Split | None] | None = None
    if protocol == "temporal":
        def valid_factory() -> Split | None:
            if train_f.height == 0:
                return None
            return _temporal(train_f, ds, test_days, exclude_seen, "temporal/valid")
    return _build_split(protocol, train_f, test_f, ds.items, exclude_seen,
                        f"global time cut at {cut} ({test_days:g} days before the newest event)",
                        valid_factory=valid_factory)


def _holdout_validation(train_f: pl.DataFrame, ds: DatasetLike, exclude_seen: bool, seed: int,
                        behaviors: list[str] | None = None) -> Split:
    """Hold out 20% of each training user's events of `behaviors` (all when None): the newest with
    timestamps, random without. Events of other behaviours stay in training."""
    base = train_f.drop([c for c in (_POS, _LEN) if c in train_f.columns])
    eligible = pl.col(S.BEHAVIOR).is_in(behaviors) if behaviors else pl.lit(True)
    has_time = base[S.TIMESTAMP].null_count() < base.height
    tr = _ordered(base.filter(eligible), seed=None if has_time else seed)
    v = pl.col(_POS) >= pl.col(_LEN) - _n_held_out(pl.col(_LEN))
    valid_train = pl.concat([base.filter(~eligible), tr.filter(~v).drop(_POS, _LEN)])
    how = "newest" if has_time else "a random"
    what = f"{'/'.join(sorted(behaviors))} events" if behaviors else "events"
    return _build_split("holdout/valid", valid_train, tr.filter(v).drop(_POS, _LEN), ds.items, exclude_seen,
                        f"{how} 20% of each training user's {what}")


def _session_validation(train_f: pl.DataFrame, test_f: pl.DataFrame, ds: DatasetLike,
                        exclude_seen: bool) -> Split | None:
    """The training sessions that start in the last test-window-length of training time (session-rec's
    train_tr / train_valid split), queried like the test sessions."""
    span = test_f[S.TIMESTAMP].max() - test_f[S.TIMESTAMP].min()  # type: ignore[operator]
    span = max(span, timedelta(hours=1))
    cut = train_f[S.TIMESTAMP].max() - span  # type: ignore[operator]
    starts = train_f.group_by(S.USER_ID).agg(pl.col(S.TIMESTAMP).min().alias("_start"))
    late = starts.filter(pl.col("_start") > pl.lit(cut, dtype=train_f.schema[S.TIMESTAMP]))[S.USER_ID]
    if late.len() == 0 or late.len() == starts.height:
        return None
    is_late = pl.col(S.USER_ID).is_in(late.implode())
    return _build_split("given/valid", train_f.filter(~is_late), train_f.filter(is_late), ds.items, exclude_seen,
                        f"training sessions starting after {cut} (the test window's length before the end)",
                        sessions=True)


def _binary(m: sp.spmatrix) -> sp.csr_matrix:
    out = sp.csr_matrix(m, dtype=np.float32, copy=True)
    out.eliminate_zeros()
    out.sum_duplicates()
    out.data[:] = 1.0
    return out


def _index_of(ids: pl.Series, vocab: Vocabulary) -> np.ndarray:
    """Vocabulary indices of many ids through one join (-1 for unknown)."""
    table = pl.DataFrame({"_id": pl.Series(vocab.ids(), dtype=pl.Utf8),
                          "_idx": np.arange(len(vocab), dtype=np.int64)})
    out = pl.DataFrame({"_id": ids.cast(pl.Utf8)}).join(table, on="_id", how="left", maintain_order="left")
    return out["_idx"].fill_null(-1).to_numpy()


def _build_split(protocol: str, train_f: pl.DataFrame, test_f: pl.DataFrame, catalogue: pl.DataFrame | None,
                 exclude_seen: bool, description: str, sessions: bool = False, fold: int | None = None,
                 valid_factory: Callable[[], Split | None] | None = None) -> Split:
    """Index the test rows by train's vocabularies; targets are distinct (user, item) pairs.

    Test users unknown to training are dropped unless `sessions`, where each is queried with all but its
    last event. An item is "seen" by a user when their history holds it with one of the behaviours found
    among the test rows (so a carted item stays recommendable when purchases are the targets). With
    `exclude_seen`, seen targets are dropped (they could never be recommended), and so are users left
    without targets.
    """
    train = Interactions.from_frame(train_f.select(_EVENT_COLUMNS), catalogue=catalogue)
    n_items = train.n_items
    target_items = Vocabulary(train.items.ids())
    target_items.extend(test_f[S.ITEM_ID].unique(maintain_order=True).to_list())

    t = test_f.with_columns(pl.Series("_u", _index_of(test_f[S.USER_ID], train.users)),
                            pl.Series("_i", _index_of(test_f[S.ITEM_ID], target_items)))
    known = t.filter(pl.col("_u") >= 0)
    known_users = np.unique(known["_u"].to_numpy())
    n_known = len(known_users)
    rows_k = np.searchsorted(known_users, known["_u"].to_numpy())
    hist_k = train.matrix()[known_users]
    target_behaviors = sorted(test_f[S.BEHAVIOR].drop_nulls().unique().to_list())
    every_behavior = set(target_behaviors) >= set(train.events[S.BEHAVIOR].unique().to_list())
    if every_behavior:
        seen_k = _binary(hist_k)
    else:
        te = train.events.filter(pl.col(S.BEHAVIOR).is_in(target_behaviors))
        seen_all = _binary(sp.csr_matrix((np.ones(te.height, np.float32),
                                          (te[USER_IDX].to_numpy(), te[ITEM_IDX].to_numpy())),
                                         shape=(train.n_users, n_items)))
        seen_k = seen_all[known_users]

    n_unknown_users = t.filter(pl.col("_u") < 0)[S.USER_ID].n_unique()
    session_ids: list[str] = []
    t_rows = [rows_k]
    t_cols = [known["_i"].to_numpy()]
    hist, seen = hist_k, seen_k
    if sessions and n_unknown_users:
        s = _ordered(t.filter(pl.col("_u") < 0).drop([c for c in (_POS, _LEN) if c in t.columns]))
        s = s.filter(pl.col(_LEN) >= 2)
        session_ids = s[S.USER_ID].unique(maintain_order=True).to_list()
        s = s.with_columns(pl.Series("_r", _index_of(s[S.USER_ID], Vocabulary(session_ids)) + n_known))
        last = s.filter(pl.col(_POS) == pl.col(_LEN) - 1)
        prefix = s.filter((pl.col(_POS) < pl.col(_LEN) - 1) & (pl.col("_i") < n_items))
        t_rows.append(last["_r"].to_numpy())
        t_cols.append(last["_i"].to_numpy())
        w = prefix[S.BEHAVIOR].replace_strict(dict(train.weighting.behavior_weights), default=1.0,
                                              return_dtype=pl.Float64).to_numpy()
        hist_s = sp.csr_matrix((w.astype(np.float32), (prefix["_r"].to_numpy() - n_known, prefix["_i"].to_numpy())),
                               shape=(len(session_ids), n_items), dtype=np.float32)
        hist_s.sum_duplicates()
        hist = sp.vstack([hist_k, hist_s], format="csr")
        pb = prefix.filter(pl.col(S.BEHAVIOR).is_in(target_behaviors))
        seen_s = _binary(sp.csr_matrix((np.ones(pb.height, np.float32),
                                        (pb["_r"].to_numpy() - n_known, pb["_i"].to_numpy())),
                                       shape=(len(session_ids), n_items)))
        seen = sp.vstack([seen_k, seen_s], format="csr")
    n_rows = n_known + len(session_ids)
    rows = np.concatenate(t_rows)
    cols = np.concatenate(t_cols)
    targets = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_rows, len(target_items)))
    targets.sum_duplicates()
    targets.data[:] = 1.0
    if exclude_seen and n_rows:
        wide = sp.csr_matrix((seen.data, seen.indices, seen.indptr), shape=targets.shape)
        targets = (targets - targets.multiply(wide)).tocsr()
        targets.eliminate_zeros()
    targets.sort_indices()
    users = np.concatenate([known_users, np.full(len(session_ids), -1, np.int64)]).astype(np.int64)
    user_ids = train.users.ids(known_users) + session_ids
    keep = np.diff(targets.indptr) > 0
    if not keep.all():
        targets, hist, seen, users = targets[keep], hist[keep], seen[keep], users[keep]
        user_ids = [u for u, k in zip(user_ids, keep) if k]
    hist = sp.csr_matrix(hist, dtype=np.float32)
    hist.sort_indices()

    notes = [description, f"{len(users)} users evaluated"]
    if not sessions and n_unknown_users:
        notes.append(f"{n_unknown_users} test users unknown to training skipped")
    n_unknown_items = len(target_items) - n_items
    if n_unknown_items:
        notes.append(f"{n_unknown_items} test items unknown to training kept as targets")
    notes.append("seen items excluded" if exclude_seen else "seen items may be recommended again")
    if not every_behavior:
        notes.append(f"seen = training events of the target behaviour(s) {', '.join(target_behaviors)}")
    seen = _binary(seen)
    return Split(protocol=protocol, train=train, users=users, user_ids=user_ids, histories=hist, seen=seen,
                 targets=targets,
                 target_items=target_items, exclude_seen=exclude_seen, description="; ".join(notes),
                 train_rows=train_f[ROW].to_numpy(), test_rows=test_f[ROW].to_numpy(), fold=fold,
                 _valid_factory=valid_factory)
