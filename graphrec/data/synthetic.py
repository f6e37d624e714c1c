"""The built-in synthetic data set: what ``graphrec.train`` uses when no data is given.

Planted structure, so learned models have something to find that popularity cannot:

* users and items belong to ``num_clusters`` taste clusters; most of a user's interactions are
  items of the user's cluster (collaborative structure);
* within a cluster the items form a chain, and a user often moves to the next item of the
  chain (sequential structure, for SASRec/BERT4Rec);
* item popularity is Zipf-like, so popularity is a fair but beatable baseline;
* ratings are higher inside the user's cluster; timestamps increase along each sequence;
* side features: item genres (the cluster plus sometimes a second one), a year and a price;
  user age group and region.

Deterministic from the seed. Generation loops over sequence positions, vectorized across users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from graphrec.data.readers import RawData
from graphrec.errors import GraphrecError


@dataclass
class SyntheticConfig:
    """Size and structure of the synthetic data set.

    Args:
        num_users, num_items, num_clusters: sizes (``num_items >= 2 * num_clusters``).
        min_len, max_len: range of each user's number of interactions (before deduplication).
        p_next: chance of moving to the next item of the cluster's chain.
        p_noise: chance of an item drawn by global popularity instead of the cluster.
        seed: random seed.
    """

    num_users: int = 1000
    num_items: int = 500
    num_clusters: int = 10
    min_len: int = 15
    max_len: int = 50
    p_next: float = 0.6
    p_noise: float = 0.15
    seed: int = 0


def make_synthetic(cfg: SyntheticConfig | None = None) -> RawData:
    """Generate the synthetic interactions and side features as a reader would return them."""
    cfg = cfg or SyntheticConfig()
    if cfg.num_items < 2 * cfg.num_clusters or cfg.num_users < 1 or cfg.num_clusters < 1:
        raise GraphrecError("synthetic: need num_users >= 1 and num_items >= 2 * num_clusters")
    if not 2 <= cfg.min_len <= cfg.max_len:
        raise GraphrecError("synthetic: need 2 <= min_len <= max_len")
    rng = np.random.default_rng(cfg.seed)
    U, I, C = cfg.num_users, cfg.num_items, cfg.num_clusters

    item_cluster = rng.permutation(np.arange(I) % C)
    popularity = 1.0 / (rng.permutation(I) + 10.0) ** 0.9  # Zipf-like, random item order
    popularity /= popularity.sum()
    members = [np.flatnonzero(item_cluster == c) for c in range(C)]  # the chain order
    sizes = np.array([len(m) for m in members])
    # Flattened chains: position p of cluster c is item chain[offset[c] + p].
    chain = np.concatenate(members)
    offset = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    within_pop = np.concatenate([popularity[m] / popularity[m].sum() for m in members])

    user_cluster = rng.integers(0, C, U)
    lengths = rng.integers(cfg.min_len, cfg.max_len + 1, U)
    T = int(lengths.max())
    pos = (rng.random(U) * sizes[user_cluster]).astype(np.int64)
    items = np.empty((U, T), dtype=np.int64)
    in_cluster = np.empty((U, T), dtype=bool)
    cum_within = np.cumsum(within_pop)
    for t in range(T):  # positions, not interactions: each step is vectorized over users
        r = rng.random(U)
        size = sizes[user_cluster]
        follow = r < cfg.p_next
        noise = r > 1.0 - cfg.p_noise
        # Jump: a popularity-weighted item of the user's own cluster.
        base = offset[user_cluster]
        # Each cluster's within-cluster popularities sum to 1: invert its slice of the CDF.
        target = cum_within[base] - within_pop[base] + rng.random(U)
        jump = np.clip(np.searchsorted(cum_within, target) - base, 0, size - 1)
        pos = np.where(follow, (pos + 1) % size, jump)
        items[:, t] = chain[base + pos]
        global_pick = rng.choice(I, size=U, p=popularity)
        items[:, t] = np.where(noise, global_pick, items[:, t])
        in_cluster[:, t] = item_cluster[items[:, t]] == user_cluster

    valid = np.arange(T)[None, :] < lengths[:, None]
    user = np.repeat(np.arange(U), lengths)
    item = items[valid]
    gaps = rng.integers(60, 86_400, (U, T)).cumsum(1)
    start = rng.integers(1_500_000_000, 1_600_000_000, U)
    time = (start[:, None] + gaps)[valid]
    rating = np.clip(np.rint(2.6 + 1.6 * in_cluster[valid] + rng.normal(0, 0.7, len(item))), 1, 5)

    frame = pd.DataFrame({"user": user.astype(np.int64), "item": item, "rating":
                          rating.astype(np.float32), "time": time.astype(np.int64)})

    second = rng.integers(0, C, I)
    genres = [f"g{a}" + (f" g{b}" if b != a and s else "") for a, b, s in
              zip(item_cluster, second, rng.random(I) < 0.3)]
    item_features = pd.DataFrame(
        {"genre": genres, "year": (1980 + rng.integers(0, 40, I)).astype(str),
         "price": np.round(rng.gamma(2.0, 5.0, I), 2).astype(np.float32)},
        index=pd.Index(np.arange(I), name="id"),
    )
    user_features = pd.DataFrame(
        {"age": np.array(["18-24", "25-34", "35-44", "45+"])[(user_cluster + rng.integers(0, 2, U)) % 4],
         "region": np.array(["north", "south", "east", "west"])[rng.integers(0, 4, U)]},
        index=pd.Index(np.arange(U), name="id"),
    )
    return RawData(
        frame, f"synthetic(seed={cfg.seed})", "synthetic", user_features, item_features,
        {"item": {"genre": "token_seq", "year": "token", "price": "float"},
         "user": {"age": "token", "region": "token"}},
    )


__all__ = ["SyntheticConfig", "make_synthetic"]
