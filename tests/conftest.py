"""Shared fixtures: an asymmetric toy graph and the location of the real data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from graphrec.data.graph import make_graph

SHARED_DATA = Path(os.environ.get("GRAPHREC_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared(*parts: str) -> Path:
    """A file under the shared data folder; skips the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data set not found at {path} (set GRAPHREC_DATA to its folder)")
    return path


def random_graph(num_users: int = 13, num_items: int = 29, per_user: tuple[int, int] = (1, 12),
                 seed: int = 0, with_time: bool = True, with_rating: bool = True):
    """A random asymmetric graph (more items than users) without duplicate pairs."""
    g = torch.Generator().manual_seed(seed)
    users, items = [], []
    for u in range(num_users):  # building a fixture, not a hot path
        n = min(int(torch.randint(per_user[0], per_user[1] + 1, (1,), generator=g)), num_items)
        chosen = torch.randperm(num_items, generator=g)[:n]
        users.append(torch.full((n,), u))
        items.append(chosen)
    user, item = torch.cat(users), torch.cat(items)
    attrs = {}
    if with_time:
        attrs["time"] = torch.randint(0, 1000, (user.numel(),), generator=g)
    if with_rating:
        attrs["rating"] = torch.randint(1, 6, (user.numel(),), generator=g).float()
    return make_graph(num_users, num_items, user, item, attrs)


@pytest.fixture
def toy_graph():
    return random_graph()
