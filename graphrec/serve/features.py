"""Features of (user, candidate) pairs for stage 2, the ranker: tensor gathers and sparse
products over the known interactions, never a loop over pairs.

Groups (``features`` names them; ``all`` takes every group the data has):

* ``retrievers``: for each retriever, its score of the candidate standardized over the
  row's candidates, ``log1p`` of its rank, and whether the item is in its list;
* ``popularity``: ``log1p`` of the item's number of known interactions and of the user's;
* ``cooccurrence``: the graph features of the pair: ``log1p`` of the number of the user's
  items that share a user with the candidate, and the candidate's score under two hops of the
  symmetrically normalized graph (``r_u R~^T R~``, the linear graph filter), both from the
  item-item co-occurrence matrix ``R^T R``;
* ``user`` and ``item``: side features of the graph's nodes: token codes (embedded by the
  ranker; codes outside the vocabulary seen at fit go to an unknown bucket), float scalars
  and multi-hot rows as dense columns;
* ``affinity``: for each item token or multi-hot feature, how much of the user's history
  shares the candidate's value: the share of history items with the candidate's token, and
  the cosine of the history's mean multi-hot row (the user's genre profile) with the item's;
* ``sequence`` (where interactions have time): the cosine of the candidate's co-occurrence
  row with the mean of the rows of the user's last 5 items, and ``log1p`` of how often the
  candidate is next to (just before or after) one of the user's items, and one of the user's
  last 5 items, in other users' time-ordered histories (the adjacency counts ``A`` of
  consecutive pairs: ``r_u A`` and ``l_u A``).

"Known interactions" are what the retrievers were trained on plus whatever else is known at
that moment (at test time the training and validation parts; while training the ranker the
same, one level down, without its holdout: :mod:`graphrec.serve.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.data.graph import user_sequences
from graphrec.errors import GraphrecError
from graphrec.schema import EDGE, ITEM, TIME, USER
from graphrec.serve.candidates import Candidates

GROUPS = ("retrievers", "popularity", "cooccurrence", "user", "item", "affinity", "sequence")
#: token features with more codes than this are left out of ``all`` (zip codes: one per user
#: or so, which a ranker can only memorize); name them to read them anyway
MAX_AUTO_VOCAB = 256
LAST_ITEMS = 5


def parse_groups(features: str | list[str], where: str = "features") -> list[str]:
    """``all`` or a comma-separated list (or list) of groups, checked."""
    names = [s.strip() for s in (features.split(",") if isinstance(features, str) else features)]
    names = [n for n in names if n]
    if names == ["all"]:
        return list(GROUPS)
    for n in names:
        if n not in GROUPS:
            raise GraphrecError(f"{where}: unknown feature group {n!r}; choose from "
                                f"all, {', '.join(GROUPS)}")
    return names


def _side(graph: HeteroData, node: str) -> list[dict[str, Any]]:
    """Readable side features of one node type: int64 token codes and finite floats."""
    out = []
    for name, value in graph[node].items():
        if name == "num_nodes" or not isinstance(value, Tensor):
            continue  # text stays text
        if value.size(0) != int(graph[node].num_nodes) or value.dim() > 2:
            continue
        if value.dtype == torch.int64 and value.dim() == 1 and value.numel():
            vocab = int(value.max()) + 1
            if int(value.min()) >= 0 and vocab <= MAX_AUTO_VOCAB:
                out.append({"name": name, "kind": "token", "vocab": vocab})
        elif value.is_floating_point() and bool(torch.isfinite(value).all()):
            out.append({"name": name, "kind": "matrix" if value.dim() == 2 else "float",
                        "width": int(value.size(1)) if value.dim() == 2 else 1})
    return out


@dataclass
class FeatureLayout:
    """What the features are: the groups, the side features read, the dense column names and
    the token columns' vocabulary sizes (each with its unknown bucket, the last code)."""

    groups: list[str]
    retrievers: int
    user: list[dict[str, Any]] = field(default_factory=list)
    item: list[dict[str, Any]] = field(default_factory=list)
    dense_names: list[str] = field(default_factory=list)
    vocab: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {"groups": self.groups, "retrievers": self.retrievers, "user": self.user,
                "item": self.item, "dense_names": self.dense_names, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureLayout":
        """The layout saved by :meth:`to_dict`."""
        return cls(list(d["groups"]), int(d["retrievers"]), list(d["user"]), list(d["item"]),
                   list(d["dense_names"]), [int(v) for v in d["vocab"]])


def layout_of(graph: HeteroData, groups: list[str], retrievers: int, strict: bool,
              where: str = "features") -> FeatureLayout:
    """The layout of ``groups`` on ``graph``. ``strict``: a named group the data lacks is an
    error (``all`` drops such groups instead)."""
    has_time = TIME in graph[EDGE]
    user_side, item_side = _side(graph, USER), _side(graph, ITEM)
    item_affine = [f for f in item_side if f["kind"] in ("token", "matrix")]
    lacking = {"user": not user_side, "item": not item_side, "affinity": not item_affine,
               "sequence": not has_time}
    missing = [g for g in groups if lacking.get(g, False)]
    if strict and missing:
        why = "interactions have no time" if missing[0] == "sequence" else "the data has no side features for it"
        raise GraphrecError(f"{where}: feature group {missing[0]!r} is not available ({why})")
    groups = [g for g in groups if g not in missing]
    lay = FeatureLayout(groups, retrievers)
    names = lay.dense_names
    if "retrievers" in groups:
        for r in range(retrievers):
            names += [f"r{r}.score", f"r{r}.log_rank", f"r{r}.listed"]
    if "popularity" in groups:
        names += ["item.log_degree", "user.log_degree"]
    if "cooccurrence" in groups:
        names += ["pair.log_cooccurring", "pair.two_hop"]
    for node, side in (("user", user_side), ("item", item_side)):
        if node in groups:
            setattr(lay, node, side)
            for f in side:
                if f["kind"] == "token":
                    lay.vocab.append(f["vocab"] + 1)
                elif f["kind"] == "float":
                    names.append(f"{node}.{f['name']}")
                else:
                    names += [f"{node}.{f['name']}[{j}]" for j in range(f["width"])]
    if "affinity" in groups:
        names += [f"affinity.{f['name']}" for f in item_affine]
    if "sequence" in groups:
        names += ["sequence.last_items", "sequence.adjacent", "sequence.adjacent_last"]
    return lay


def _csr(ptr: Tensor, items: Tensor, num_items: int) -> sp.csr_matrix:
    data = np.ones(items.numel(), dtype=np.float32)
    return sp.csr_matrix((data, items.numpy(), ptr.numpy()), shape=(ptr.numel() - 1, num_items))


class FeatureBuilder:
    """Builds the features of :class:`FeatureLayout` from the known interactions ``known``
    (a graph; its side features are read from it too).

    Construction does the per-data work once (degrees, the co-occurrence matrix, the users'
    token and genre profiles); :meth:`build` is gathers and sparse products per batch.
    """

    def __init__(self, layout: FeatureLayout, known: HeteroData) -> None:
        self.layout = layout
        self.num_users = int(known[USER].num_nodes)
        self.num_items = int(known[ITEM].num_nodes)
        ptr, items = user_sequences(known)  # time order within each user
        self.ptr, self.items = ptr, items
        R = _csr(ptr, items, self.num_items)
        R.data[:] = 1.0
        R.sum_duplicates()
        R.data[:] = 1.0
        self.R = R
        self.item_deg = torch.from_numpy(np.asarray(R.sum(0)).ravel()).float()
        self.user_deg = torch.from_numpy(np.asarray(R.sum(1)).ravel()).float()
        groups = layout.groups
        if "cooccurrence" in groups or "sequence" in groups:
            C = (R.T @ R).tocsr()  # [I, I] co-occurrence counts
            self.C_bin = C.copy()
            self.C_bin.data[:] = 1.0
            du = np.maximum(np.asarray(R.sum(1)).ravel(), 1.0)
            di = np.maximum(np.asarray(R.sum(0)).ravel(), 1.0)
            Rn = sp.diags(1 / np.sqrt(du)) @ R @ sp.diags(1 / np.sqrt(di))
            self.Rn = Rn.tocsr()
            self.gram = (Rn.T @ Rn).tocsr()  # R~^T R~
            inv = sp.diags(1 / np.sqrt(np.maximum(C.diagonal(), 1.0)))
            self.C_cos = (inv @ C @ inv).tocsr()  # cosine of co-occurrence rows
        if "sequence" in groups:
            # consecutive pairs within each user's time-ordered history, both directions
            same = torch.zeros(items.numel(), dtype=torch.bool)
            if items.numel() > 1:
                owner = torch.repeat_interleave(torch.arange(self.num_users), ptr.diff())
                same = owner[1:] == owner[:-1]
            a, b = items[:-1][same].numpy(), items[1:][same].numpy()
            ones = np.ones(a.size, dtype=np.float32)
            A = sp.csr_matrix((ones, (a, b)), shape=(self.num_items, self.num_items))
            self.adjacent = (A + A.T).tocsr()
        self.side = {USER: {f["name"]: known[USER][f["name"]] for f in layout.user},
                     ITEM: {f["name"]: known[ITEM][f["name"]] for f in layout.item}}
        self.profiles: dict[str, Tensor] = {}
        if "affinity" in groups:
            for f in layout.item:
                value = self.side[ITEM][f["name"]]
                if f["kind"] == "token":
                    onehot = sp.csr_matrix((np.ones(self.num_items, dtype=np.float32),
                                            (np.arange(self.num_items), value.numpy())),
                                           shape=(self.num_items, f["vocab"]))
                    share = R @ onehot  # [U, V] history counts per token value
                    self.profiles[f["name"]] = torch.from_numpy(
                        np.asarray(share.todense()) / np.maximum(self.user_deg.numpy()[:, None], 1.0)).float()
                elif f["kind"] == "matrix":
                    self.profiles[f["name"]] = torch.from_numpy(
                        np.asarray(R @ value.numpy()) / np.maximum(self.user_deg.numpy()[:, None], 1.0)).float()

    def _rows(self, M: sp.csr_matrix, users: Tensor, items: Tensor) -> Tensor:
        """``(R[users] @ M)[b, items[b, c]]``: ``[B, C]``."""
        block = self.R[users.numpy()] @ M
        dense = torch.from_numpy(np.asarray(block.todense(), dtype=np.float32))
        return dense.gather(1, items.clamp(min=0))

    @torch.no_grad()
    def build(self, users: Tensor, cand: Candidates) -> tuple[Tensor, Tensor]:
        """``(dense [B, N, D], tokens [B, N, T])`` of the candidates of ``users [B]``
        (on the CPU; pads get zeros)."""
        lay = self.layout
        users = users.cpu()
        items = cand.items.cpu()
        mask = items >= 0
        safe = items.clamp(min=0)
        B, N = items.shape
        cols: list[Tensor] = []
        tokens: list[Tensor] = []
        if "retrievers" in lay.groups:
            if cand.scores.size(2) != lay.retrievers:
                raise GraphrecError(f"features: {cand.scores.size(2)} retrievers' scores, the "
                                    f"layout has {lay.retrievers}")
            scores, ranks = cand.scores.cpu().float(), cand.ranks.cpu().float()
            m = mask[..., None].float()
            finite = torch.isfinite(scores) & mask[..., None]
            s = torch.where(finite, scores, torch.zeros_like(scores))
            cnt = finite.float().sum(1, keepdim=True).clamp(min=1)
            mean = s.sum(1, keepdim=True) / cnt
            std = (((s - mean) * finite).pow(2).sum(1, keepdim=True) / cnt).sqrt().clamp(min=1e-6)
            z = torch.where(finite, (s - mean) / std, torch.full_like(s, -3.0))
            for r in range(lay.retrievers):
                cols += [z[..., r] * m[..., 0], torch.log1p(ranks[..., r]),
                         (ranks[..., r] < cand.depth).float()]
        if "popularity" in lay.groups:
            cols += [torch.log1p(self.item_deg[safe]), torch.log1p(self.user_deg[users])[:, None].expand(B, N)]
        if "cooccurrence" in lay.groups:
            cols += [torch.log1p(self._rows(self.C_bin, users, items)),
                     self._rows(self.gram, users, items)]
        for node in (USER, ITEM):
            if node not in lay.groups:
                continue
            for f in getattr(lay, node):
                value = self.side[node][f["name"]]
                rows = value[users][:, None].expand(B, N, *value.shape[1:]) if node == USER else value[safe]
                if f["kind"] == "token":
                    vocab = f["vocab"]
                    tokens.append(torch.where((rows >= 0) & (rows < vocab), rows, torch.full_like(rows, vocab)))
                elif f["kind"] == "float":
                    cols.append(rows.float())
                else:
                    cols += list(rows.float().unbind(-1))
        if "affinity" in lay.groups:
            for f in lay.item:
                if f["name"] not in self.profiles:
                    continue
                prof = self.profiles[f["name"]][users]  # [B, V or G]
                value = self.side[ITEM][f["name"]]
                if f["kind"] == "token":
                    code = value[safe].clamp(max=prof.size(1) - 1)
                    cols.append(prof.gather(1, code))
                else:
                    rows = value[safe].float()  # [B, N, G]
                    num = (rows * prof[:, None, :]).sum(-1)
                    den = rows.norm(dim=-1) * prof.norm(dim=-1, keepdim=True)
                    cols.append(num / den.clamp(min=1e-9))
        if "sequence" in lay.groups:
            last, rows = self._last_items(users, items)
            cols += [last, torch.log1p(self._rows(self.adjacent, users, items)),
                     torch.log1p(torch.from_numpy(np.asarray((rows @ self.adjacent).todense(),
                                                             dtype=np.float32)).gather(1, safe))]
        dense = torch.stack(cols, -1) if cols else torch.zeros(B, N, 0)
        dense = dense * mask[..., None]
        tok = torch.stack(tokens, -1) if tokens else torch.zeros(B, N, 0, dtype=torch.long)
        return dense.float(), tok

    def _last_items(self, users: Tensor, items: Tensor) -> tuple[Tensor, sp.csr_matrix]:
        """Mean co-occurrence cosine of each candidate with the user's last items, and the
        sparse ``[B, num_items]`` indicator rows of those items."""
        start, end = self.ptr[users], self.ptr[users + 1]
        count = (end - start).clamp(max=LAST_ITEMS)
        offsets = torch.arange(LAST_ITEMS)
        idx = (end[:, None] - 1 - offsets[None, :])  # [B, L] positions, latest first
        valid = offsets[None, :] < count[:, None]
        last = self.items[idx.clamp(min=0)].masked_fill(~valid, 0)
        rows = sp.csr_matrix((valid.flatten().float().numpy(),
                              (np.repeat(np.arange(users.numel()), LAST_ITEMS), last.flatten().numpy())),
                             shape=(users.numel(), self.num_items))
        sims = torch.from_numpy(np.asarray((rows @ self.C_cos).todense(), dtype=np.float32))
        return sims.gather(1, items.clamp(min=0)) / count.clamp(min=1)[:, None].float(), rows


__all__ = ["GROUPS", "FeatureBuilder", "FeatureLayout", "layout_of", "parse_groups"]
