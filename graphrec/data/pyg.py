"""``--format pyg``: a graph that PyG made (its data sets, a ``HeteroData`` of your own) as input.

PyG names node and edge types freely (``('user', 'rates', 'movie')`` in its MovieLens data
sets); graphrec's schema has ``user``, ``item`` and ``('user', 'interacts', 'item')``. This
reader takes the interaction edges of one edge type (``--edge-type SRC,REL,DST``, or the only
edge type not named ``rev_*``) and returns the same raw frame every reader does, so the graph
is then built, deduplicated and split as any other input:

* raw user and item ids: the PyG node indices of the source and destination types;
* ``rating``: the edge attribute ``rating``, else ``edge_label`` when it is a float vector with
  one value per edge; ``time``: the edge attribute ``time`` (integer seconds);
* node features: a node type's ``x`` matrix becomes the float-vector feature ``features``
  (``x`` itself is a name graphrec's schema keeps).

Nodes without an interaction are dropped, as for every reader (ids are taken from the
interactions). The file must load with ``torch.load(weights_only=True)``: a ``HeteroData`` saved
as ``torch.save(data.to_dict(), path)``, or a PyG ``InMemoryDataset`` processed file
(``(data.to_dict(), slices, cls)``, PyG >= 2.4). A pickled ``HeteroData`` object is refused,
since loading it would run pickled code.

Going the other way needs nothing: a graphrec graph *is* a plain ``HeteroData``
(``graphrec.data.load(path).graph``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from graphrec.errors import GraphrecError


def parse_edge_type(text: str | tuple | None) -> tuple[str, str, str] | None:
    """``"user,rates,movie"`` -> ``("user", "rates", "movie")``; ``None`` stays ``None``."""
    if text is None or isinstance(text, tuple):
        return text
    parts = tuple(p.strip() for p in str(text).split(","))
    if len(parts) != 3 or not all(parts):
        raise GraphrecError(f"--edge-type: expected SRC,REL,DST (e.g. user,rates,movie), got {text!r}")
    return parts  # type: ignore[return-value]


def _load(path: Path) -> Any:
    import torch_geometric.data  # noqa: F401  (allowlists HeteroData for weights-only loads)
    from torch_geometric.data import HeteroData

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GraphrecError(f"{path}: no such file") from None
    except Exception as e:  # unpickling errors come in many types
        detail = str(e).splitlines()
        hint = next((ln.strip() for ln in detail if "Unsupported global" in ln), type(e).__name__)
        raise GraphrecError(f"{path}: not a weights-only PyG graph ({hint[:160]}); save it as "
                            "torch.save(data.to_dict(), path)") from None
    if isinstance(blob, (tuple, list)) and blob and isinstance(blob[0], dict):
        blob = blob[0]  # an InMemoryDataset file: (data dict, slices, class)
    if isinstance(blob, HeteroData):
        return blob
    if not isinstance(blob, dict) or not any(isinstance(k, tuple) for k in blob):
        raise GraphrecError(f"{path}: not a PyG HeteroData (expected the dict of "
                            "data.to_dict(), with edge types as keys)")
    try:
        return HeteroData.from_dict(blob)
    except Exception as e:  # a dict PyG cannot read
        raise GraphrecError(f"{path}: not a PyG HeteroData ({type(e).__name__}: {e})") from None


def read_pyg(path: str | Path, edge_type: str | tuple | None = None) -> "RawData":  # noqa: F821
    """Read the interactions of one edge type of a saved PyG ``HeteroData`` (module docstring)."""
    from graphrec.data.readers import RawData, convert_rating

    path = Path(path)
    data = _load(path)
    wanted = parse_edge_type(edge_type)
    types = [tuple(t) for t in data.edge_types]
    if wanted is None:
        forward = [t for t in types if not t[1].startswith("rev_")]
        if len(forward) != 1:
            raise GraphrecError(f"{path}: {len(forward)} edge types ({', '.join(map(str, types))}); "
                                "name the interactions with --edge-type SRC,REL,DST")
        wanted = forward[0]
    if wanted not in types:
        raise GraphrecError(f"--edge-type: {path} has no {wanted} edges; it has "
                            f"{', '.join(map(str, types)) or 'none'}")
    store = data[wanted]
    if "edge_index" not in store:
        raise GraphrecError(f"{path}: the {wanted} edges have no edge_index")
    ei = store.edge_index
    if ei.dim() != 2 or ei.size(0) != 2 or ei.dtype.is_floating_point:
        raise GraphrecError(f"{path}: {wanted} edge_index must be an integer [2, E] tensor, got "
                            f"{ei.dtype} of shape {tuple(ei.shape)}")
    num_edges = ei.size(1)
    if num_edges == 0:
        raise GraphrecError(f"{path}: no interactions (the {wanted} edges are empty)")
    frame = pd.DataFrame({"user": ei[0].long().numpy(), "item": ei[1].long().numpy()})
    frame.index = pd.RangeIndex(1, num_edges + 1)  # "lines" of errors: 1-based edge positions
    for name in ("rating", "edge_label"):
        value = store.get(name) if name in store else None
        if (isinstance(value, torch.Tensor) and value.dim() == 1 and value.numel() == num_edges
                and (name == "rating" or value.is_floating_point())):
            frame["rating"] = convert_rating(pd.Series(value.double().numpy(), index=frame.index),
                                             f"{path} ({name} of edge)")
            break
    if "time" in store:
        time = store["time"]
        if not isinstance(time, torch.Tensor) or time.dim() != 1 or time.numel() != num_edges:
            raise GraphrecError(f"{path}: the {wanted} edges' time must be one value per edge")
        if time.is_floating_point() and not bool(torch.isfinite(time).all()):
            raise GraphrecError(f"{path}: the {wanted} edges' time has non-finite values")
        frame["time"] = time.double().round().long().numpy()
    raw = RawData(frame, str(path), "pyg")
    for kind, node_type in (("user", wanted[0]), ("item", wanted[2])):
        x = data[node_type].get("x") if "x" in data[node_type] else None
        if isinstance(x, torch.Tensor) and x.dim() == 2 and x.is_floating_point():
            matrix = x.float().numpy()
            feats = pd.DataFrame({"features": list(matrix)},
                                 index=pd.Index(np.arange(len(matrix), dtype=np.int64), name="id"))
            setattr(raw, f"{kind}_features", feats)
            raw.feature_types[kind] = {"features": "float_vec"}
    return raw


__all__ = ["read_pyg", "parse_edge_type"]
