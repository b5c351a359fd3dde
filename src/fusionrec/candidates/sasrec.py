"""SASRec: self-attentive sequential recommendation (Kang & McAuley 2018), trained with full cross-entropy.

The network is the published one (item + learned position embeddings, `n_blocks` causal self-attention
blocks with pre-layer-norm, the item embedding reused as the output layer), but trained with a softmax
over the whole catalogue at every position instead of one sampled negative with BCE: Klenitskiy &
Vasilev (RecSys 2023, antklen/sasrec-bert4rec-recsys23) show this "SASRec+" beats both vanilla SASRec
and BERT4Rec by a wide margin.

torch is an optional dependency (the `[deep]` extra): this module imports without it, and fitting or
loading a model without it raises a `FusionrecError` that says what to install.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import numpy as np
import scipy.sparse as sp

from fusionrec.candidates.base import CandidateGenerator, Query, ScoredItems, iter_batches, top_n
from fusionrec.candidates.popularity import apply_fallback, popularity_fallback
from fusionrec.data.interactions import Interactions
from fusionrec.errors import FusionrecError

__all__ = ["SASRec"]

_PREFIX = "net/"  # npz keys of the network's tensors
_log = logging.getLogger(__name__)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the test environment has torch
        raise FusionrecError("SASRec needs PyTorch, which is not installed: pip install fusionrec[deep]") from exc
    return torch


@contextlib.contextmanager
def _torch_settings(threads: int, deterministic: bool) -> Iterator[Any]:
    """torch with `threads` intra-op threads and deterministic kernels; the caller's settings come back after."""
    torch = _torch()
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, threads))
    if deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        yield torch
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


_NET_CLASS: Any = None


def _network_class() -> Any:
    """The torch module class, defined on first use so that this module imports without torch."""
    global _NET_CLASS
    if _NET_CLASS is not None:
        return _NET_CLASS
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        """Pre-LN transformer block: x + attn(LN(x)) with a causal mask, then x + FFN(LN(x))."""

        def __init__(self, hidden: int, heads: int, dropout: float) -> None:
            super().__init__()
            self.heads = heads
            self.dropout = dropout
            self.ln1 = nn.LayerNorm(hidden, eps=1e-8)
            self.qkv = nn.Linear(hidden, 3 * hidden)
            self.out = nn.Linear(hidden, hidden)
            self.ln2 = nn.LayerNorm(hidden, eps=1e-8)
            self.ff1 = nn.Linear(hidden, hidden)
            self.ff2 = nn.Linear(hidden, hidden)
            self.drop = nn.Dropout(dropout)

        def forward(self, x: Any) -> Any:
            b, length, h = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
            # right padding: a real position only ever sees earlier, real positions under the causal mask
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
            x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, length, h)))
            return x + self.drop(self.ff2(self.drop(F.relu(self.ff1(self.ln2(x))))))

    class Network(nn.Module):
        """Token 0 pads; token i + 1 is item index i. forward: [B, L] tokens -> [B, L, hidden]."""

        def __init__(self, n_items: int, hidden: int, max_len: int, n_blocks: int, heads: int,
                     dropout: float) -> None:
            super().__init__()
            self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
            self.pos_emb = nn.Embedding(max_len, hidden)
            self.drop = nn.Dropout(dropout)
            self.blocks = nn.ModuleList([Block(hidden, heads, dropout) for _ in range(n_blocks)])
            self.ln = nn.LayerNorm(hidden, eps=1e-8)
            self.scale = math.sqrt(hidden)
            for m in self.modules():  # small normal init, as in SASRec.pytorch / RecBole
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            with torch.no_grad():
                self.item_emb.weight[0].zero_()

        def forward(self, tokens: Any) -> Any:
            length = tokens.shape[1]
            pos = torch.arange(length, device=tokens.device)
            x = self.item_emb(tokens) * self.scale + self.pos_emb(pos)[None]
            mask = (tokens > 0).unsqueeze(-1).to(x.dtype)
            x = self.drop(x) * mask
            for block in self.blocks:
                x = block(x) * mask
            return self.ln(x)

        def item_logits(self, hidden: Any) -> Any:
            """[N, hidden] -> [N, n_items]: the item embedding is the output layer (padding left out)."""
            return hidden @ self.item_emb.weight[1:].T

    _NET_CLASS = Network
    return Network


class SASRec(CandidateGenerator):
    """Next-item prediction from the order of a user's history (Kang & McAuley 2018; CE loss as SASRec+).

    Known users are scored from their training sequence (its last `max_len` items, kept in the model);
    visitors from `Query.history` in `candidates()`, which is ordered oldest first. A plain history row
    has no order, so `score()` orders an unknown user's row by weight, lightest first: under time decay
    the newest events weigh most and come last. Users with nothing to go on get popularity.

    Early stopping watches NDCG@10 on each training user's last training item (carved out of the
    training data itself, seen items excluded); the best epoch's weights are kept. The validation
    item is then part of the input sequence when scoring, as in the SASRec papers' protocol.
    """

    name: ClassVar[str] = "sasrec"
    history_based: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Config:
        hidden: int = 64
        n_blocks: int = 2
        n_heads: int = 1
        #: the last max_len items of a sequence are used (and learned positions cover max_len)
        max_len: int = 50
        #: dropout and learning rate chosen on Beauty's validation item (benchmarks/bench_sasrec_beauty.py)
        dropout: float = 0.2
        learning_rate: float = 2e-3
        weight_decay: float = 0.0
        batch_size: int = 128
        #: upper bound; early stopping usually ends training sooner
        epochs: int = 100
        #: epochs without a better validation NDCG@10 before stopping; 0 trains all `epochs`
        patience: int = 3
        #: validate on at most this many users (a seeded sample), to keep each epoch's check cheap
        valid_users: int = 10_000
        #: stop training after this many seconds (None: no limit); the best epoch so far is kept
        max_seconds: float | None = None
        seed: int = 0
        #: torch intra-op threads while fitting and scoring; on a machine busy with other work, 1 can be
        #: several times faster than 2 (threads then wait on each other at every operation)
        n_threads: int = 2

        def __post_init__(self) -> None:
            if self.hidden < 1 or self.n_heads < 1 or self.hidden % self.n_heads:
                raise ValueError(f"hidden ({self.hidden}) must be a positive multiple of n_heads ({self.n_heads})")
            if self.n_blocks < 0 or self.max_len < 1 or self.batch_size < 1 or self.epochs < 0:
                raise ValueError("n_blocks >= 0, max_len >= 1, batch_size >= 1 and epochs >= 0 are required")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
            if not self.learning_rate > 0:
                raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    seq_items_: np.ndarray  # int64: each known user's last max_len training items, concatenated
    seq_offsets_: np.ndarray  # int64 [n_users + 1]
    fallback_: np.ndarray  # float32 [n_items]
    epochs_trained_: int
    best_epoch_: int  # 1-based; 0: not trained
    valid_ndcg_: float  # NaN without a validation set
    valid_history_: np.ndarray  # float64 [epochs_trained_]: validation NDCG@10 after each epoch

    def __init__(self, cfg: "SASRec.Config | None" = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()
        self._net: Any = None

    # -- fitting ------------------------------------------------------------------------------
    def _fit(self, data: Interactions) -> None:
        c = self.cfg
        items, offsets = data.sequences()
        items = np.asarray(items, np.int64)
        self.fallback_ = popularity_fallback(data)
        self.seq_items_, self.seq_offsets_ = _truncate(items, offsets, c.max_len)
        lengths = np.diff(offsets)
        # validation: the last training item of every user with >= 3 events (so >= 2 remain to learn from)
        v_users = np.nonzero(lengths >= 3)[0]
        rng = np.random.default_rng(c.seed)
        if len(v_users) > c.valid_users:
            v_users = np.sort(rng.choice(v_users, c.valid_users, replace=False))
        train_len = lengths.copy()
        train_len[lengths >= 3] -= 1  # every eligible user gives up its last item, sampled or not
        train_tokens = _padded([items[offsets[u]:offsets[u] + train_len[u]] for u in range(len(lengths))
                                if train_len[u] >= 2], c.max_len + 1)
        valid_in = _padded([items[offsets[u]:offsets[u] + train_len[u]] for u in v_users], c.max_len)
        valid_target = np.array([items[offsets[u] + train_len[u]] for u in v_users], np.int64)

        with _torch_settings(c.n_threads, True) as torch, torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            net = _network_class()(data.n_items, c.hidden, c.max_len, c.n_blocks, c.n_heads, c.dropout)
            self._net = net
            self.best_epoch_, self.epochs_trained_, self.valid_ndcg_ = 0, 0, float("nan")
            self.valid_history_ = np.empty(0, np.float64)
            if len(train_tokens) == 0 or c.epochs == 0:
                net.eval()
                return
            self._train(torch, net, train_tokens, valid_in, valid_target, rng)
            net.eval()

    def _train(self, torch: Any, net: Any, train_tokens: np.ndarray, valid_in: np.ndarray,
               valid_target: np.ndarray, rng: np.random.Generator) -> None:
        c = self.cfg
        opt = torch.optim.Adam(net.parameters(), lr=c.learning_rate, betas=(0.9, 0.98), weight_decay=c.weight_decay)
        lengths = (train_tokens > 0).sum(1)
        best, best_state, since_best = -1.0, None, 0
        history: list[float] = []
        start = time.perf_counter()
        for epoch in range(1, c.epochs + 1):
            net.train()
            total, count = 0.0, 0
            for rows in _length_buckets(lengths, c.batch_size, rng):
                width = int(lengths[rows].max())
                batch = torch.from_numpy(train_tokens[rows, :width])
                inputs, labels = batch[:, :-1], batch[:, 1:]
                hidden = net(inputs)
                mask = labels > 0
                logits = net.item_logits(hidden[mask])
                loss = torch.nn.functional.cross_entropy(logits, labels[mask] - 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n_pos = int(mask.sum())
                total += float(loss.detach()) * n_pos
                count += n_pos
            self.epochs_trained_ = epoch
            if len(valid_target) == 0:
                _log.info("sasrec epoch %d: loss %.4f", epoch, total / max(count, 1))
                self.best_epoch_ = epoch
                continue
            net.eval()
            ndcg = self._valid_ndcg(torch, net, valid_in, valid_target)
            history.append(ndcg)
            self.valid_history_ = np.asarray(history, np.float64)
            _log.info("sasrec epoch %d: loss %.4f, validation NDCG@10 %.4f (%.0f s)", epoch, total / max(count, 1),
                      ndcg, time.perf_counter() - start)
            if ndcg >= best:  # on a tie the later, longer-trained epoch wins
                since_best = 0 if ndcg > best else since_best + 1
                best, self.best_epoch_ = ndcg, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                since_best += 1
            if (c.patience and since_best >= c.patience) or \
                    (c.max_seconds is not None and time.perf_counter() - start > c.max_seconds):
                break
        if best_state is not None:
            net.load_state_dict(best_state)
            self.valid_ndcg_ = best

    def _valid_ndcg(self, torch: Any, net: Any, tokens: np.ndarray, target: np.ndarray, k: int = 10) -> float:
        """NDCG@k of the validation items, the input sequence's items excluded (seen)."""
        total = 0.0
        for sl in iter_batches(len(target), 1024):
            s = self._last_logits(torch, net, tokens[sl])
            t = tokens[sl]
            r, col = np.nonzero(t > 0)
            s[r, t[r, col] - 1] = -np.inf
            # rank = number of items scored above the target
            tgt = s[np.arange(len(s)), target[sl]]
            rank = (s > tgt[:, None]).sum(1)
            seen = np.isneginf(tgt)  # a repeat of a seen item can never be recommended
            total += float(np.where((rank < k) & ~seen, 1.0 / np.log2(rank + 2.0), 0.0).sum())
        return total / len(target)

    # -- scoring ------------------------------------------------------------------------------
    def _ensure_net(self) -> Any:
        if self._net is None:
            raise FusionrecError("SASRec is not fitted: call fit() or load() first")
        return self._net

    def _last_logits(self, torch: Any, net: Any, tokens: np.ndarray) -> np.ndarray:
        """Logits [B, n_items] after each right-padded row's last item (rows need >= 1 item)."""
        lengths = (tokens > 0).sum(1)
        width = max(1, int(lengths.max()))
        with torch.inference_mode():
            hidden = net(torch.from_numpy(np.ascontiguousarray(tokens[:, :width])))
            last = hidden[torch.arange(len(tokens)), torch.from_numpy(np.maximum(lengths - 1, 0))]
            return net.item_logits(last).numpy().astype(np.float32, copy=True)

    def _score_sequences(self, seqs: list[np.ndarray]) -> np.ndarray:
        """Scores [B, n_items] for item sequences (oldest first); empty sequences get the fallback."""
        net = self._ensure_net()
        out = np.empty((len(seqs), self.n_items_), np.float32)
        empty = np.array([len(s) == 0 for s in seqs], bool)
        rows = np.nonzero(~empty)[0]
        if len(rows):
            tokens = _padded([seqs[r] for r in rows], self.cfg.max_len)
            with _torch_settings(self.cfg.n_threads, False) as torch:
                for sl in iter_batches(len(rows), 512):
                    out[rows[sl]] = self._last_logits(torch, net, tokens[sl])
        return apply_fallback(out, empty, self.fallback_)

    def _stored_sequence(self, user: int) -> np.ndarray:
        return self.seq_items_[self.seq_offsets_[user]:self.seq_offsets_[user + 1]]

    def score(self, users: np.ndarray, histories: sp.csr_matrix | None, live: bool = False) -> np.ndarray:
        """Logits [B, n_items] of the item after each user's sequence.

        Known users: their training sequence (`live=True` appends history-row items missing from it,
        lightest weight first). Unknown users: their history row's items, lightest weight first (a row
        has no order; with time decay the newest events weigh most). Nothing at all: popularity.
        """
        users = np.asarray(users, np.int64)
        h = self._histories(histories, len(users))
        known = self._known_users(users)
        seqs: list[np.ndarray] = []
        for r in range(len(users)):
            row_items = h.indices[h.indptr[r]:h.indptr[r + 1]]
            row_w = h.data[h.indptr[r]:h.indptr[r + 1]]
            by_weight = row_items[np.lexsort((row_items, row_w))].astype(np.int64)
            if known[r]:
                seq = self._stored_sequence(int(users[r]))
                if live and len(by_weight):
                    seq = np.concatenate([seq, by_weight[~np.isin(by_weight, seq)]])
            else:
                seq = by_weight
            seqs.append(seq)
        return self._score_sequences(seqs)

    def candidates(self, query: Query, n: int) -> ScoredItems:
        """Top-n after `query.history` (ordered oldest first); without one, a known user's training sequence."""
        h = np.asarray(query.history, np.int64)
        h = h[(h >= 0) & (h < self.n_items_)]
        if len(h) == 0 and self._known_users(np.array([query.user]))[0]:
            h = self._stored_sequence(int(query.user))
        s = self._score_sequences([h])
        if query.exclude is not None and len(query.exclude):
            ex = np.asarray(query.exclude, np.int64)
            s[0, ex[(ex >= 0) & (ex < self.n_items_)]] = -np.inf
        idx, vals = top_n(s, n)
        keep = np.isfinite(vals[0])
        return ScoredItems(idx[0][keep], vals[0][keep])

    # -- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        net = self._ensure_net()
        state: dict[str, Any] = {"seq_items": self.seq_items_, "seq_offsets": self.seq_offsets_,
                                 "fallback": self.fallback_,
                                 "training": np.array([self.epochs_trained_, self.best_epoch_], np.int64),
                                 "valid_ndcg": np.array(self.valid_ndcg_, np.float64),
                                 "valid_history": self.valid_history_}
        for key, tensor in net.state_dict().items():
            state[_PREFIX + key] = tensor.detach().cpu().numpy()
        return state

    def _load_state(self, arrays: dict[str, Any]) -> None:
        c = self.cfg
        torch = _torch()
        self.seq_items_ = np.asarray(arrays["seq_items"], np.int64)
        self.seq_offsets_ = np.asarray(arrays["seq_offsets"], np.int64)
        self.fallback_ = np.asarray(arrays["fallback"], np.float32)
        self.epochs_trained_, self.best_epoch_ = (int(x) for x in arrays["training"])
        self.valid_ndcg_ = float(arrays["valid_ndcg"])
        self.valid_history_ = np.asarray(arrays["valid_history"], np.float64)
        net = _network_class()(self.n_items_, c.hidden, c.max_len, c.n_blocks, c.n_heads, c.dropout)
        weights = {k[len(_PREFIX):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(_PREFIX)}
        net.load_state_dict(weights, strict=True)
        net.eval()
        self._net = net


def _truncate(items: np.ndarray, offsets: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep each user's last max_len items: (items, offsets) in the same CSR-like layout."""
    lengths = np.diff(offsets)
    kept = np.minimum(lengths, max_len)
    starts = offsets[1:] - kept
    new_offsets = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
    idx = np.repeat(starts - new_offsets[:-1], kept) + np.arange(new_offsets[-1])
    return items[idx].astype(np.int64), new_offsets


def _length_buckets(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                    pool: int = 64) -> Iterator[np.ndarray]:
    """Shuffled batches of row indices, rows of similar length together (less padding, same expectation).

    Rows are shuffled, cut into pools of `pool` batches, sorted by length within a pool and batched;
    the batches of all pools are then visited in random order.
    """
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    for sl in iter_batches(len(order), batch_size * pool):
        chunk = order[sl]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[b] for b in iter_batches(len(chunk), batch_size))
    for i in rng.permutation(len(batches)):
        yield batches[i]


def _padded(seqs: list[np.ndarray], width: int) -> np.ndarray:
    """Right-padded int64 token matrix [len(seqs), width]: the last `width` items of each, item i as i + 1."""
    out = np.zeros((len(seqs), width), np.int64)
    for r, s in enumerate(seqs):
        tail = np.asarray(s[-width:], np.int64)
        out[r, :len(tail)] = tail + 1
    return out
