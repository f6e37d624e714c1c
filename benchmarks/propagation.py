"""Propagation benchmark: one LightGCN layer and the 3-layer encoder, backend against backend.

Times ``A~ X`` over the symmetric-normalized bipartite adjacency ``A~ = D^-1/2 A D^-1/2`` (users
then items, ``graphrec.nn.propagation.normalized_adjacency`` of the training graph), forward and
forward+backward (``out.backward(g)`` for a fixed random ``g``: the layer's vector-Jacobian
product, gradient to ``x``, no loss of its own), for:

* ``graphrec``: ``LightGCNConv`` (PyG ``MessagePassing``, through ``propagate``) over the
  prebuilt adjacency as the models build it (``blocked_adjacency``: tiles where they pay),
  i.e. ``symmetric_spmm``, whose backward is one more forward product (``A~`` is symmetric).
  The backend graphrec uses.
* ``torch_csr_autograd``: plain ``adj @ x`` with the torch.sparse CSR (torch's own backward).
* ``torch_coo``: ``torch.sparse.mm`` with the same matrix in COO layout.
* ``pyg_lgconv_csr``: ``torch_geometric.nn.LGConv(normalize=False)`` given the CSR.
* ``pyg_lgconv_edge_index``: ``LGConv()`` over the undirected ``edge_index``, normalizing on
  every call (its default use): gather, scale and scatter of per-edge messages.
* ``index_add``: ``zeros.index_add_(0, row, x[col] * w)``, a plain edge-list implementation.
* ``torch_sparse`` (``SparseTensor`` matmul), ``torch_scatter`` (``segment_csr``) and
  ``torch_scatter_add`` (``scatter_add``): only where those packages are installed, else
  reported as skipped with the reason.
* ``dense``: a dense ``[N, N] @ [N, F]`` product, only where the dense matrix is under 2 GiB.

and the full 3-layer ``LightGCNEncoder(3)`` (forward, forward+backward) for ``graphrec``,
``torch_csr_autograd`` and ``pyg_lgconv_edge_index``. Graphs: the Gowalla training graph
(LightGCN split, ``SplitConfig("given")``) and synthetic power-law bipartite graphs of 10^5,
10^6 and 10^7 interactions (10^8 on a GPU that holds it); embedding sizes 64 and 256.

Every backend's forward output and gradient is checked against the torch.sparse CSR result
before it is timed; a wrong backend fails the run. Each result reports milliseconds, edges
(adjacency non-zeros) per second, effective bytes per second under a bytes model (indices +
values + gathered rows + output), the compulsory DRAM traffic (indices + values + embedding
table once + output), and the effective figure as a fraction of the machine's memory bandwidth,
measured in the same run by copying a 1 GiB tensor.

Every measurement runs in a child process (this script re-invoked with ``--child KIND``); the
parent imports only the standard library (and ``spine.py``'s standard-library helpers). Timing
children cover one (graph, embedding size, device) each and time their backends interleaved
(see :func:`time_interleaved`), so a shared machine's drift hits all of them alike; memory
children measure one backend each, in a fresh process whose allocator returns freed memory, so
its peak RSS is that of the propagation itself.

Usage::

    python benchmarks/propagation.py            # full grid (~10 minutes on 2 cores); appends
                                                # results/propagation.jsonl, rewrites .md, .png
    python benchmarks/propagation.py --quick    # small synthetic graphs, < 1 minute, writes
                                                # nothing (add --out DIR to write there)
    python benchmarks/propagation.py --data /path/to/data   # folder holding gowalla/

The data folder is ``--data``, else ``$GRAPHREC_DATA``, else ``../shared/data`` beside the
checkout. Without Gowalla there, the script says so and uses the synthetic graphs only.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_RESULTS, current_rss_mib, git_commit, hwm_mib, import_graphrec, load_avg,
    machine_info, resolve_gowalla, stats)

JSONL_NAME, MD_NAME, PNG_NAME = "propagation.jsonl", "propagation.md", "propagation.png"
CHILD_TIMEOUT_S = 900

BACKENDS = ("graphrec", "torch_csr_autograd", "torch_coo", "pyg_lgconv_csr",
            "pyg_lgconv_edge_index", "index_add", "torch_sparse", "torch_scatter",
            "torch_scatter_add", "dense")
ENCODER_BACKENDS = ("graphrec", "torch_csr_autograd", "pyg_lgconv_edge_index")
GRAPHREC = "graphrec"
EDGE_INDEX = "pyg_lgconv_edge_index"
NUM_LAYERS = 3

FULL_GRAPHS = ("gowalla", "syn:100000", "syn:1000000", "syn:10000000")
QUICK_GRAPHS = ("syn:10000", "syn:100000")
GPU_EXTRA_GRAPH = "syn:100000000"  # 10^8 interactions, on a GPU with enough memory
GPU_EXTRA_MIN_GIB = 60.0
FULL_DIMS, QUICK_DIMS = (64, 256), (64,)
DENSE_LIMIT_BYTES = 2 << 30  # the dense matrix must stay under 2 GiB
# On a CPU, a backend is skipped where nnz * F (the floats a layer gathers) exceeds its limit,
# to keep the default run near 10 minutes on 2 cores; --all-backends runs them anyway. The
# slow ones materialize every message; the medium ones and torch's CSR autograd rebuild or
# convert the matrix every call. graphrec always runs.
SLOW_BACKENDS = ("pyg_lgconv_edge_index", "index_add", "torch_scatter", "torch_scatter_add")
WORK_LIMITS = {**{b: 2.5e8 for b in SLOW_BACKENDS},      # Gowalla and 10^6 at F=64 run
               **{b: 1e9 for b in ("torch_coo", "pyg_lgconv_csr", "torch_sparse")},
               "torch_csr_autograd": 2e9}                # 10^7 at F=64 (1.3e9) runs
ENCODER_WORK_LIMIT = 1e9  # the 3-layer encoders (Gowalla; synthetic graphs only with --quick)
SLOW_ROUND_S = 1.0  # a forward + forward+backward round longer than this: 3 timed rounds

# Targets of the propagation issue for the graphrec backend (Gowalla, dim 64, CPU)
TARGET_FB_RATIO = 2.5          # forward+backward of a layer at most 2.5x its forward
TARGET_BW_FRACTION = 0.5       # forward at >= 50 % of the measured bandwidth (bytes model)
TARGET_SPEEDUP = 10.0          # >= 10x faster than LGConv over edge_index, same run
TARGET_SLOPE = (0.8, 1.25)     # time ~ linear in edges: log-log slope over the synthetic range
TARGET_MEMORY_FACTOR = 2.0     # peak memory of a forward layer <= 2x (adjacency + embeddings)
TARGET_GRAPH, TARGET_DIM = "gowalla", 64

# Users and items of a synthetic graph with E interactions (Gowalla: 27 per user, 20 per item)
SYN_EDGES_PER_USER, SYN_EDGES_PER_ITEM = 20, 40
SYN_ZIPF, SYN_SIGMA, SYN_SEED = 0.8, 1.0, 0


# ============================================================================================
# Child side: each function runs in a fresh process and returns a JSON-able dict


def _versions() -> dict[str, Any]:
    import platform

    import numpy
    import torch
    import torch_geometric

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__, "numpy": numpy.__version__,
            "torch_sparse": _package_version("torch_sparse"),
            "torch_scatter": _package_version("torch_scatter")}


def _package_version(name: str) -> str | None:
    """The version of an optional package, or None when it is missing or fails to import."""
    import importlib

    try:
        module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install is as good as a missing one here
        return None
    return str(getattr(module, "__version__", "unknown"))


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _sync(device: str) -> Callable[[], None]:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def synthetic_edges(num_edges: int, seed: int = SYN_SEED) -> tuple[int, int, Any, Any]:
    """A power-law bipartite graph with exactly ``num_edges`` distinct (user, item) pairs:
    lognormal user degrees (mean ``SYN_EDGES_PER_USER``, sigma ``SYN_SIGMA``), Zipf item
    popularity (exponent ``SYN_ZIPF``) over randomly permuted item ids. Deterministic."""
    import numpy as np

    rng = np.random.default_rng(seed)
    num_users = max(50, num_edges // SYN_EDGES_PER_USER)
    num_items = max(25, num_edges // SYN_EDGES_PER_ITEM)
    pop = np.arange(1, num_items + 1, dtype=np.float64) ** -SYN_ZIPF
    cdf = np.cumsum(pop / pop.sum())
    perm = rng.permutation(num_items)
    mean = num_edges / num_users
    factor = 1.1
    while True:  # draw with replacement, drop duplicate pairs, draw more if too few remain
        mu = math.log(mean * factor) - SYN_SIGMA ** 2 / 2
        deg = np.clip(np.rint(rng.lognormal(mu, SYN_SIGMA, num_users)), 1, num_items // 2)
        users = np.repeat(np.arange(num_users, dtype=np.int64), deg.astype(np.int64))
        items = perm[np.minimum(np.searchsorted(cdf, rng.random(users.size)), num_items - 1)]
        keys = np.sort(users * num_items + items)  # (np.unique is far slower here)
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        if keys.size >= num_edges:
            break
        factor *= 1.2 * num_edges / keys.size
    keys = np.sort(keys[rng.permutation(keys.size)[:num_edges]])
    return num_users, num_items, keys // num_items, keys % num_items


def cached_synthetic_edges(num_edges: int, work: str | None) -> tuple[int, int, Any, Any]:
    """:func:`synthetic_edges`, saved in ``work`` by the first child that needs the graph and
    loaded by the others (the 10^7 graph takes seconds to draw)."""
    import numpy as np

    path = Path(work) / f"synthetic-{num_edges}.npz" if work else None
    if path is not None and path.exists():
        z = np.load(path)
        return int(z["users"]), int(z["items"]), z["user"], z["item"]
    num_users, num_items, user, item = synthetic_edges(num_edges)
    if path is not None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, users=num_users, items=num_items, user=user, item=item)
        tmp.replace(path)
    return num_users, num_items, user, item


def load_graph(spec: str, data: str | None, work: str | None = None
               ) -> tuple[Any, dict[str, Any]]:
    """``gowalla`` (training edges of the given split) or ``syn:E``: the HeteroData graph and
    its sizes."""
    import torch

    from graphrec.schema import EDGE, ITEM, USER

    start = time.perf_counter()
    if spec == "gowalla":
        from graphrec.data import build, read
        from graphrec.split import SplitConfig, split

        folder = Path(data)
        ds = build(read([folder / "train.txt", folder / "test.txt"]))
        graph = split(ds.graph, SplitConfig("given")).train
        name = "gowalla"
    else:
        from graphrec.data.graph import make_graph

        num_edges = int(float(spec.split(":", 1)[1]))
        num_users, num_items, user, item = cached_synthetic_edges(num_edges, work)
        graph = make_graph(num_users, num_items, torch.from_numpy(user), torch.from_numpy(item))
        name = f"synthetic-{num_edges:.0e}".replace("+0", "")
    num_users, num_items = int(graph[USER].num_nodes), int(graph[ITEM].num_nodes)
    edges = int(graph[EDGE].edge_index.size(1))
    user_deg = torch.bincount(graph[EDGE].edge_index[0], minlength=num_users)
    item_deg = torch.bincount(graph[EDGE].edge_index[1], minlength=num_items)
    return graph, {"graph": name, "spec": spec, "users": num_users, "items": num_items,
                   "nodes": num_users + num_items, "interactions": edges, "nnz": 2 * edges,
                   "max_user_degree": int(user_deg.max()), "max_item_degree": int(item_deg.max()),
                   "load_s": time.perf_counter() - start}


@dataclass
class Context:
    """What every backend's setup may use: the CSR adjacency and its parts, on the device."""

    adj: Any  # torch.sparse CSR [N, N]
    graph: Any
    num_users: int
    device: str
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.adj.size(0))

    def row(self) -> Any:
        """Row index of every non-zero (expanded from ``crow``), cached."""
        import torch

        if "row" not in self._cache:
            crow = self.adj.crow_indices()
            self._cache["row"] = torch.repeat_interleave(
                torch.arange(self.n, device=crow.device), crow[1:] - crow[:-1])
        return self._cache["row"]

    def edge_index(self) -> Any:
        """The undirected ``edge_index [2, 2E]`` of the bipartite graph over U+I nodes."""
        import torch

        from graphrec.schema import EDGE

        ei = self.graph[EDGE].edge_index.to(self.device)
        u, i = ei[0], ei[1] + self.num_users
        return torch.stack([torch.cat([u, i]), torch.cat([i, u])])


def _tiling(adj: Any, dim: int) -> dict[str, Any]:
    """How graphrec's adjacency is cut: tiles (1: the plain CSR) and the largest slice of the
    table one tile gathers from, in MiB."""
    if adj is None or adj.num_tiles <= 1:
        return {"tiles": 1, "slice_mib": None}
    widths = [hi - lo for _, _, tiles in adj.bands for _, lo, hi in tiles]
    return {"tiles": adj.num_tiles, "bands": len(adj.bands),
            "slice_mib": max(widths, default=0) * dim * 4 / 2**20}


def structure_bytes(name: str, n: int, nnz: int, index_bytes: int = 8) -> int:
    """Bytes of the structure a backend keeps between calls (its adjacency representation).
    ``index_bytes``: the size of one index of graphrec's CSR adjacency (int32 or int64), which
    the CSR backends share; the others hold int64 indices of their own."""
    def csr(ib: int) -> int:  # row pointers + columns + fp32 values
        return (n + 1) * ib + nnz * ib + nnz * 4

    return {"torch_coo": nnz * 16 + nnz * 4, "pyg_lgconv_edge_index": nnz * 16,
            "index_add": nnz * 20, "torch_sparse": csr(8), "torch_scatter": csr(8),
            "torch_scatter_add": nnz * 20,
            "dense": n * n * 4}.get(name, csr(index_bytes))


def setup_backend(name: str, ctx: Context, dim: int) -> Callable[[Any], Any]:
    """The backend's one-layer function ``x -> A~ x`` over ``dim`` features (building its
    structure now). Raises ``ImportError`` for a backend whose package is missing."""
    import torch

    adj = ctx.adj
    if name == "graphrec":
        from graphrec.nn.propagation import LightGCNConv, blocked_adjacency

        conv = LightGCNConv()
        # as the models build it
        ours = ctx._cache["graphrec_adj"] = blocked_adjacency(adj, dim, ctx.num_users)
        return lambda x: conv(x, ours)
    if name == "torch_csr_autograd":
        return lambda x: adj @ x
    if name == "torch_coo":
        coo = adj.to_sparse_coo().coalesce()
        return lambda x: torch.sparse.mm(coo, x)
    if name == "pyg_lgconv_csr":
        from torch_geometric.nn import LGConv

        conv = LGConv(normalize=False)
        return lambda x: conv(x, adj)
    if name == "pyg_lgconv_edge_index":
        from torch_geometric.nn import LGConv

        conv, edge_index = LGConv(), ctx.edge_index()
        return lambda x: conv(x, edge_index)
    if name == "index_add":
        row, col, val = ctx.row(), adj.col_indices(), adj.values()

        def index_add(x: Any) -> Any:
            msg = x[col] * val.unsqueeze(1)  # [nnz, F]: every message materialized
            return torch.zeros(x.size(0), x.size(1), dtype=x.dtype,
                               device=x.device).index_add_(0, row, msg)
        return index_add
    if name == "torch_sparse":
        from torch_sparse import SparseTensor, matmul

        # torch_sparse takes int64 indices only (graphrec's CSR holds int32)
        st = SparseTensor(rowptr=adj.crow_indices().long(), col=adj.col_indices().long(),
                          value=adj.values(), sparse_sizes=(ctx.n, ctx.n))
        return lambda x: matmul(st, x)
    if name == "torch_scatter":
        from torch_scatter import segment_csr

        # segment_csr takes int64 row pointers only
        crow, col, val = adj.crow_indices().long(), adj.col_indices().long(), adj.values()
        return lambda x: segment_csr(x[col] * val.unsqueeze(1), crow, reduce="sum")
    if name == "torch_scatter_add":
        from torch_scatter import scatter_add

        row, col, val = ctx.row(), adj.col_indices().long(), adj.values()
        return lambda x: scatter_add(x[col] * val.unsqueeze(1), row, dim=0, dim_size=ctx.n)
    if name == "dense":
        dense = adj.to_dense()
        return lambda x: dense @ x
    raise ValueError(f"unknown backend {name}")


MISSING_PACKAGE = {"torch_sparse": "torch_sparse", "torch_scatter": "torch_scatter",
                   "torch_scatter_add": "torch_scatter"}


def skip_reason(name: str, info: dict[str, Any], dim: int, device: str, all_backends: bool,
                free_bytes: float) -> str | None:
    """Why a backend does not run for this graph and size (None: it runs)."""
    pkg = MISSING_PACKAGE.get(name)
    if pkg and _package_version(pkg) is None:
        return f"{pkg} is not installed"
    n, nnz = info["nodes"], info["nnz"]
    if name == "dense" and n * n * 4 >= DENSE_LIMIT_BYTES:
        return (f"dense [N, N] float32 matrix would be {n * n * 4 / 2**30:,.1f} GiB "
                f"(limit {DENSE_LIMIT_BYTES / 2**30:g} GiB)")
    messages = nnz * dim * 4 if name in SLOW_BACKENDS else 0
    need = structure_bytes(name, n, nnz) + 6 * n * dim * 4 + 3 * messages
    if need > free_bytes:
        return f"needs about {need / 2**30:,.1f} GiB, {free_bytes / 2**30:,.1f} GiB available"
    limit = WORK_LIMITS.get(name)
    if limit and not all_backends and not device.startswith("cuda") and nnz * dim > limit:
        return (f"time budget: nnz x F = {nnz * dim:.1e} > {limit:.1e} on a CPU "
                "(--all-backends runs it)")
    return None


def _free_bytes(device: str) -> float:
    """Memory a backend may plan to use: half the available RAM, or 80 % of free GPU memory."""
    import torch

    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return 0.8 * free
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemAvailable:"))
        return 0.5 * kib * 1024
    except (OSError, StopIteration):
        return float("inf")


def _once(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def time_calls(fns: dict[str, Callable[[], Any]], sync: Callable[[], None],
               args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Time each of ``fns`` (the bandwidth copy): ``args.warmup`` untimed calls, then
    ``args.min_repeats`` timed ones."""
    warm = {k: [_once(fn, sync) for _ in range(max(1, args.warmup))] for k, fn in fns.items()}
    runs = {k: [_once(fn, sync) for _ in range(args.min_repeats)] for k, fn in fns.items()}
    return {k: {**stats(runs[k]), "runs": runs[k], "warmup": warm[k]} for k in fns}


def time_interleaved(entries: dict[str, dict[str, Callable[[], Any]]],
                     first: dict[str, dict[str, float]], sync: Callable[[], None],
                     args: argparse.Namespace) -> dict[str, dict[str, dict[str, Any]]]:
    """Time every backend's calls (``entries[backend][mode]``), all backends interleaved.

    ``first``: the seconds of each backend's first calls (the correctness check), which count
    as warm-up; then ``args.warmup`` more untimed rounds of a backend unless its round (one call
    of each mode) takes over ``SLOW_ROUND_S``. Each backend gets ``n`` timed calls of each mode,
    enough to fill ``args.budget`` seconds (between ``args.min_repeats``, 3 for slow rounds, and
    ``args.max_repeats``). They are spread over ``R`` passes over all backends (``R``: the
    smallest ``n``), a backend making about ``n / R`` rounds per pass, modes alternating. So
    every backend is sampled across the same stretch of time: on a shared machine whose speed
    drifts by 2x within seconds, the ratios between backends stay honest."""
    warm = {b: {m: [first[b][m]] for m in fns} for b, fns in entries.items()}
    est: dict[str, float] = {}
    for b, fns in entries.items():
        round_s = sum(first[b].values())
        for _ in range(0 if round_s > SLOW_ROUND_S else max(0, args.warmup)):
            for m, fn in fns.items():
                warm[b][m].append(_once(fn, sync))
        est[b] = max(sum(w[-1] for w in warm[b].values()), 1e-6)
    n = {}
    for b, e in est.items():
        low = args.min_repeats if e <= SLOW_ROUND_S else min(args.min_repeats, 3)
        n[b] = int(min(args.max_repeats, max(low, math.ceil(args.budget / e))))
    passes = min(n.values()) if n else 0
    runs: dict[str, dict[str, list[float]]] = {b: {m: [] for m in fns}
                                               for b, fns in entries.items()}
    for i in range(passes):
        for b, fns in entries.items():
            for _ in range(n[b] // passes + (1 if i < n[b] % passes else 0)):
                for m, fn in fns.items():
                    runs[b][m].append(_once(fn, sync))
    return {b: {m: {**stats(runs[b][m]), "runs": runs[b][m], "warmup": warm[b][m]}
                for m in fns} for b, fns in entries.items()}


def check_close(name: str, what: str, got: Any, want: Any) -> dict[str, float]:
    """Compare with the CSR reference at float32 tolerance; raise (fail the run) when wrong."""
    import torch

    got, want = got.detach().float(), want.detach().float()
    if got.shape != want.shape:
        raise AssertionError(f"{name}: {what} has shape {tuple(got.shape)}, "
                             f"expected {tuple(want.shape)}")
    err = (got - want).abs()
    scale = float(want.abs().max().clamp(min=1e-30))
    max_abs = float(err.max()) if err.numel() else 0.0
    ok = bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale)) and bool(
        torch.isfinite(got).all())
    if not ok:
        raise AssertionError(f"{name}: {what} differs from the torch.sparse CSR result "
                             f"(max abs error {max_abs:.3g}, reference max {scale:.3g})")
    return {"max_abs_err": max_abs, "max_rel_err": max_abs / scale}


def encoder_fn(name: str, layer: Callable[[Any], Any], ctx: Context) -> Callable[[Any], Any]:
    """The 3-layer LightGCN encoder (mean of layers 0..3) with the backend's layer."""
    if name == GRAPHREC:
        from graphrec.nn.propagation import LightGCNEncoder

        enc = LightGCNEncoder(NUM_LAYERS).to(ctx.device)
        ours = ctx._cache.get("graphrec_adj", ctx.adj)
        return lambda x: enc(x, ours)
    w = 1.0 / (NUM_LAYERS + 1)

    def encode(x: Any) -> Any:
        out, h = x * w, x
        for _ in range(NUM_LAYERS):
            h = layer(h)
            out = out + h * w
        return out
    return encode


def check_backend(name: str, fn: Callable[[Any], Any], x: Any, g: Any, ref_out: Any,
                  ref_grad: Any, sync: Callable[[], None]
                  ) -> tuple[dict[str, Any], dict[str, float], dict[str, Callable[[], Any]]]:
    """Check a backend's forward output and gradient against the reference (raising when
    wrong), timing those first calls. Returns the check, their seconds, and the calls to time:
    forward (no autograd graph) and forward+backward (``out.backward(g)``, gradient to x)."""
    import torch

    first: dict[str, float] = {}
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = fn(x)
    sync()
    first["forward"] = time.perf_counter() - t0
    check = {"forward": check_close(name, "forward output", out, ref_out)}
    del out
    xr = x.detach().clone().requires_grad_(True)
    sync()
    t0 = time.perf_counter()
    fn(xr).backward(g)
    sync()
    first["forward_backward"] = time.perf_counter() - t0
    check["gradient"] = check_close(name, "gradient", xr.grad, ref_grad)
    xr.grad = None

    def forward() -> None:
        with torch.no_grad():
            fn(x)

    def forward_backward() -> None:
        xr.grad = None
        fn(xr).backward(g)

    return check, first, {"forward": forward, "forward_backward": forward_backward}


def _prepare(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Context]:
    """Load the graph and build the normalized CSR adjacency on the device."""
    import torch

    from graphrec.nn.propagation import normalized_adjacency

    graph, info = load_graph(args.graph, args.data, args.work)
    t0 = time.perf_counter()
    adj = normalized_adjacency(graph, args.device)
    _sync(args.device)()
    info["adjacency_s"] = time.perf_counter() - t0
    info["index_bytes"] = adj.col_indices().element_size()
    info["adjacency_bytes"] = structure_bytes(GRAPHREC, info["nodes"], info["nnz"],
                                              info["index_bytes"])
    # A~ must be symmetric for graphrec's backward: u.(A v) == v.(A u) for random u, v.
    gen = torch.Generator().manual_seed(1)
    u, v = (torch.randn(info["nodes"], 1, generator=gen, dtype=torch.float32).to(args.device)
            for _ in range(2))
    a, b = float((u * (adj @ v)).sum()), float((v * (adj @ u)).sum())
    if abs(a - b) > 1e-4 * max(1.0, abs(a), abs(b)):
        raise AssertionError(f"the normalized adjacency is not symmetric: {a} vs {b}")
    ctx = Context(adj, graph, info["users"], args.device)
    return graph, info, ctx


def _embeddings(n: int, dim: int, device: str) -> tuple[Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=gen).to(device)
    g = torch.randn(n, dim, generator=gen).to(device)
    return x, g


def child_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Versions, devices and cache sizes, for planning and for the records."""
    import_graphrec(args.threads)
    import torch

    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            cuda.append({"name": p.name, "memory_gib": p.total_memory / 2**30})
    return {"versions": _versions(), "cuda": cuda, "threads": torch.get_num_threads(),
            "bandwidth": child_bandwidth(args)}


def child_bandwidth(args: argparse.Namespace) -> dict[str, Any]:
    """Memory bandwidth: copy a large float32 tensor (``--copy-mib``) into another; GB/s as
    (read + write bytes) / time. Median of the timed copies after two warm-up copies."""
    import_graphrec(args.threads)
    import torch

    n = args.copy_mib * (1 << 20) // 4
    src = torch.ones(n, device=args.device)
    dst = torch.empty_like(src)
    sync = _sync(args.device)
    timing = time_calls({"copy": lambda: dst.copy_(src)}, sync,
                        argparse.Namespace(warmup=2, min_repeats=10))["copy"]
    nbytes = 2 * n * 4
    return {"bytes": nbytes, "seconds": timing,
            "gbps": {"median": nbytes / timing["median"] / 1e9, "max": nbytes / timing["min"] / 1e9,
                     "runs": [nbytes / t / 1e9 for t in timing["runs"]]}}


def child_timing(args: argparse.Namespace) -> dict[str, Any]:
    """One graph, one embedding size, one device: every backend's layer and the encoders."""
    import_graphrec(args.threads)
    import torch

    _, info, ctx = _prepare(args)
    x, g = _embeddings(ctx.n, args.dim, args.device)
    sync = _sync(args.device)
    adj = ctx.adj
    with torch.no_grad():
        ref_out, ref_grad = adj @ x, adj @ g  # symmetric: the gradient A~^T g is A~ g
    free = _free_bytes(args.device)
    results: dict[str, Any] = {}
    layer_fns: dict[str, Callable[[Any], Any]] = {}
    first: dict[str, dict[str, float]] = {}
    calls: dict[str, dict[str, Callable[[], Any]]] = {}
    for name in args.backends.split(","):
        reason = skip_reason(name, info, args.dim, args.device, args.all_backends, free)
        if reason:
            results[name] = {"status": "skipped", "reason": reason}
            continue
        t0 = time.perf_counter()
        try:
            fn = setup_backend(name, ctx, args.dim)
        except ImportError as e:
            results[name] = {"status": "skipped", "reason": f"import failed: {e}"}
            continue
        sync()
        prepare_s = time.perf_counter() - t0
        print(f"  {info['graph']} F={args.dim} {name}: check ...", file=sys.stderr, flush=True)
        check, first[name], calls[name] = check_backend(name, fn, x, g, ref_out, ref_grad, sync)
        results[name] = {"status": "ok", "check": check, "prepare_s": prepare_s}
        if name == GRAPHREC:
            results[name]["tiling"] = _tiling(ctx._cache.get("graphrec_adj"), args.dim)
        layer_fns[name] = fn
        gc.collect()
    print(f"  {info['graph']} F={args.dim}: timing {', '.join(calls)} ...", file=sys.stderr,
          flush=True)
    for name, sec in time_interleaved(calls, first, sync, args).items():
        results[name]["seconds"] = sec
    calls.clear()
    gc.collect()

    encoders: dict[str, Any] = {}
    if args.encoders:
        with torch.no_grad():  # the encoder is linear: E = sum_k w_k A~^k x, its gradient alike
            w = 1.0 / (NUM_LAYERS + 1)
            enc_out, enc_grad, hx, hg = x * w, g * w, x, g
            for _ in range(NUM_LAYERS):
                hx, hg = adj @ hx, adj @ hg
                enc_out, enc_grad = enc_out + hx * w, enc_grad + hg * w
            del hx, hg
        too_big = (not args.all_backends and not args.device.startswith("cuda")
                   and info["nnz"] * args.dim > ENCODER_WORK_LIMIT)
        for name in args.encoders.split(","):
            if too_big:
                encoders[name] = {"status": "skipped", "reason": (
                    f"time budget: nnz x F = {info['nnz'] * args.dim:.1e} > "
                    f"{ENCODER_WORK_LIMIT:.1e} on a CPU (--all-backends runs it)")}
                continue
            if name not in layer_fns:
                encoders[name] = {"status": "skipped",
                                  "reason": results.get(name, {}).get("reason", "layer not run")}
                continue
            print(f"  {info['graph']} F={args.dim} {name} {NUM_LAYERS}-layer encoder: check ...",
                  file=sys.stderr, flush=True)
            fn = encoder_fn(name, layer_fns[name], ctx)
            check, first[name], calls[name] = check_backend(f"{name} encoder", fn, x, g,
                                                            enc_out, enc_grad, sync)
            encoders[name] = {"status": "ok", "check": check}
        for name, sec in time_interleaved(calls, first, sync, args).items():
            encoders[name]["seconds"] = sec
    return {"info": info, "dim": args.dim, "device": args.device, "backends": results,
            "encoders": encoders, "threads": torch.get_num_threads(),
            "device_name": (torch.cuda.get_device_name(torch.device(args.device))
                            if args.device.startswith("cuda") else None)}


def child_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of one backend: forward and forward+backward of a layer (and the 3-layer
    encoder for graphrec), each measured from the memory in use before the adjacency and the
    embeddings were built. Run with ``MALLOC_MMAP_THRESHOLD_`` set, so freed buffers go back to
    the system and the resident size follows what is allocated."""
    import_graphrec(args.threads)
    import torch

    from graphrec.nn.propagation import normalized_adjacency

    cuda = args.device.startswith("cuda")
    graph, info = load_graph(args.graph, args.data, args.work)
    reason = skip_reason(args.backend, info, args.dim, args.device, True,
                         _free_bytes(args.device))
    if reason:
        return {"info": info, "dim": args.dim, "device": args.device, "backend": args.backend,
                "skipped": reason}
    gc.collect()
    sync = _sync(args.device)

    def used_mib() -> float:
        return torch.cuda.memory_allocated() / 2**20 if cuda else (current_rss_mib() or 0.0)

    def reset() -> None:
        gc.collect()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_hwm()

    def peak_mib() -> float:
        sync()
        return torch.cuda.max_memory_allocated() / 2**20 if cuda else (hwm_mib() or 0.0)

    base = used_mib()
    reset()
    adj = normalized_adjacency(graph, args.device)
    ctx = Context(adj, graph, info["users"], args.device)
    n = ctx.n
    held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in (adj.crow_indices(), adj.col_indices(), adj.values())}
    ib = adj.col_indices().element_size()
    x = _embeddings(n, args.dim, args.device)[0]
    fn = setup_backend(args.backend, ctx, args.dim)
    ours = ctx._cache.get("graphrec_adj")  # graphrec's own structure (None for the others)
    tiling = _tiling(ours, args.dim)
    tiled = ours is not None and ours.num_tiles > 1  # tiles, not the one plain CSR
    if args.backend != "torch_csr_autograd" and (args.backend != GRAPHREC or tiled):
        # only the backend's own structure stays (graphrec's tiles hold their copy)
        ctx.adj = adj = None
        ctx._cache = {"graphrec_adj": ours} if ours is not None else {}
    gc.collect()
    setup_peak = peak_mib() - base
    resident = used_mib() - base
    out: dict[str, Any] = {"base_mib": base, "setup_peak_mib": setup_peak,
                           "resident_mib": resident}

    def phase(key: str, step: Callable[[], Any]) -> None:
        step()  # warm-up: one-time allocations (thread pools, caches) are not the propagation's
        reset()
        step()
        out[key] = peak_mib() - base

    with torch.no_grad():
        phase("forward_peak_mib", lambda: fn(x))
    x.requires_grad_(True)
    g = _embeddings(n, args.dim, args.device)[1]

    def fwd_bwd(f: Callable[[Any], Any]) -> Callable[[], None]:
        def step() -> None:
            x.grad = None
            f(x).backward(g)
        return step

    phase("forward_backward_peak_mib", fwd_bwd(fn))
    x.grad = None
    if args.backend == GRAPHREC and info["nnz"] * args.dim <= ENCODER_WORK_LIMIT:
        enc = encoder_fn(GRAPHREC, fn, ctx)
        with torch.no_grad():
            phase("encoder_forward_peak_mib", lambda: enc(x.detach()))
        phase("encoder_forward_backward_peak_mib", fwd_bwd(enc))
    nnz, dim = info["nnz"], args.dim
    own = ours.structure_bytes if tiled else structure_bytes(args.backend, n, nnz, ib)
    out.update(structure_mib=own / 2**20, tiles=tiling["tiles"],
               adjacency_mib=structure_bytes(GRAPHREC, n, nnz, ib) / 2**20,
               adjacency_storage_mib=sum(held.values()) / 2**20,
               embeddings_mib=n * dim * 4 / 2**20, kind="cuda_allocated" if cuda else "rss")
    return {"info": info, "dim": dim, "device": args.device, "backend": args.backend,
            "memory": out}


def child_plot(args: argparse.Namespace) -> dict[str, Any]:
    """The log-log plot (time against adjacency non-zeros, one line per backend and device)
    from the records in ``--records``; skipped with a note when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"written": False, "reason": "matplotlib is not installed"}
    records = [json.loads(line) for line in Path(args.records).read_text().splitlines()]
    layer = [r for r in records if r.get("section") == "layer" and r["status"] == "ok"]
    dims = sorted({r["dim"] for r in layer})
    modes = (("forward", "forward"), ("forward_backward", "forward + backward"))
    fig, axes = plt.subplots(len(modes), len(dims), figsize=(6.2 * len(dims), 9.0),
                             squeeze=False)
    names = [b for b in BACKENDS if any(r["backend"] == b for r in layer)]
    colors = {b: plt.cm.tab10(i % 10) for i, b in enumerate(names)}
    styles = {"cpu": "-", "cuda": "--"}
    for col, dim in enumerate(dims):
        for row, (mode, title) in enumerate(modes):
            ax = axes[row][col]
            for b in names:
                for dev in sorted({r["device"].split(":")[0] for r in layer}):
                    pts = sorted((r["graph"]["nnz"], r["seconds"][mode]["median"] * 1e3,
                                  r["graph"]["graph"] == "gowalla") for r in layer
                                 if r["backend"] == b and r["dim"] == dim
                                 and r["device"].split(":")[0] == dev)
                    syn = [(e, t) for e, t, gw in pts if not gw]
                    gow = [(e, t) for e, t, gw in pts if gw]
                    label = f"{b} ({dev})"
                    if syn:
                        ax.plot([p[0] for p in syn], [p[1] for p in syn], styles.get(dev, ":"),
                                marker="o", color=colors[b], label=label, lw=1.6, ms=4)
                        label = None
                    if gow:
                        ax.plot([p[0] for p in gow], [p[1] for p in gow], marker="*",
                                ls="none", color=colors[b], ms=11, label=label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"one layer, {title}, F = {dim}")
            ax.set_xlabel("adjacency non-zeros (2 x interactions)")
            ax.set_ylabel("ms (median)")
            ax.grid(True, which="both", alpha=0.3)
            lo, hi = ax.get_xlim()
            ylo, yhi = ax.get_ylim()
            anchor = min(((r["graph"]["nnz"], r["seconds"][mode]["median"] * 1e3) for r in layer
                          if r["backend"] == GRAPHREC and r["dim"] == dim
                          and r["graph"]["spec"].startswith("syn:")), default=None)
            if anchor:  # slope 1 through graphrec's smallest synthetic graph
                ax.plot([anchor[0], hi], [anchor[1], anchor[1] * hi / anchor[0]], color="grey",
                        lw=0.9, ls=":", label="slope 1 (time ∝ edges) from graphrec")
            syn = [r for r in layer if r["graph"]["spec"].startswith("syn:")]
            l3 = next((r.get("l3_bytes") for r in layer if r.get("l3_bytes")), None)
            if l3 and syn:  # where the synthetic graphs' embedding table outgrows the L3 cache
                per_nnz = syn[0]["graph"]["nodes"] / syn[0]["graph"]["nnz"]
                knee = l3 / (per_nnz * dim * 4)
                if lo < knee < hi:
                    ax.axvline(knee, color="black", lw=0.7, ls="--", alpha=0.5)
                    ax.text(knee * 1.05, ylo * 1.3, "table > L3", fontsize=7, alpha=0.7)
            ax.set_ylim(ylo, yhi)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("LightGCN propagation: time per layer against edges "
                 "(lines: synthetic power-law graphs; stars: Gowalla)", fontsize=11)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    return {"written": True, "path": args.png}


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "probe": child_probe,
    "bandwidth": child_bandwidth,
    "timing": child_timing,
    "memory": child_memory,
    "plot": child_plot,
}


def child_main(args: argparse.Namespace) -> int:
    result = CHILDREN[args.child](args)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# ============================================================================================
# Parent side: plan, run the children, derive the figures, write results (standard library)


@dataclass
class Plan:
    """What this invocation does."""

    quick: bool
    data: Path | None  # the Gowalla folder; None: synthetic graphs only
    graphs: list[str]
    dims: list[int]
    devices: list[str]
    backends: list[str]
    encoders: list[str]
    out: Path | None
    threads: int
    warmup: int
    min_repeats: int
    max_repeats: int
    budget: float
    copy_mib: int
    all_backends: bool
    memory: bool
    max_load: float
    max_wait: float
    max_total_wait: float
    notes: list[str] = field(default_factory=list)
    waited: float = 0.0  # seconds spent waiting for a quiet machine so far
    work: Path | None = None  # scratch folder shared by the children (cached synthetic graphs)


def _log(msg: str) -> None:
    print(f"propagation: {msg}", file=sys.stderr, flush=True)


def run_child(kind: str, plan: Plan, extra: list[str], env: dict[str, str] | None = None
              ) -> dict[str, Any]:
    """Start this script as ``--child kind`` and return the JSON it printed, with the 1-minute
    load average before and after it."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
           "--threads", str(plan.threads)] + extra
    if plan.work is not None:
        cmd += ["--work", str(plan.work)]
    if plan.data is not None:
        cmd += ["--data", str(plan.data)]
    load_before = load_avg()
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                          env={**os.environ, **(env or {})})
    child_s = round(time.monotonic() - start, 1)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} {' '.join(extra)} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_avg_1m"] = [load_before, load_avg()]
    result["child_seconds"] = child_s
    return result


def wait_for_quiet(plan: Plan) -> float:
    """Sleep until the 1-minute load average is below ``plan.max_load``: at most
    ``plan.max_wait`` seconds, and at most what is left of ``plan.max_total_wait`` for the whole
    run (so waiting cannot stretch the run much). Returns the seconds waited."""
    start = time.monotonic()
    limit = min(plan.max_wait, plan.max_total_wait - plan.waited)
    if limit <= 0:
        return 0.0
    while (load := load_avg()) is not None and load >= plan.max_load:
        if time.monotonic() - start >= limit:
            _log(f"load average still {load:.2f} after {limit:.0f} s of waiting; timing anyway "
                 "(the load is recorded)")
            break
        time.sleep(5)
    waited = time.monotonic() - start
    plan.waited += waited
    return waited


def l3_bytes() -> int | None:
    """The last-level cache of CPU 0, from sysfs."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = None
    try:
        for idx in base.glob("index*"):
            level = int((idx / "level").read_text())
            size = (idx / "size").read_text().strip()
            mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
            value = int(size.rstrip("KM")) * mult
            if best is None or level > best[0]:
                best = (level, value)
    except (OSError, ValueError):
        return None
    return best[1] if best else None


def layer_bytes(info: dict[str, Any], dim: int) -> dict[str, int]:
    """The bytes one layer's forward must move: the effective model (indices + values + every
    gathered row + output) and the compulsory DRAM traffic (the table read once instead)."""
    n, nnz, ib = info["nodes"], info["nnz"], info.get("index_bytes", 8)
    indices, values = (n + 1) * ib + nnz * ib, nnz * 4
    table, gathered, output = n * dim * 4, nnz * dim * 4, n * dim * 4
    return {"indices": indices, "values": values, "gathered": gathered, "table": table,
            "output": output, "effective": indices + values + gathered + output,
            "compulsory": indices + values + table + output}


def derive(rec: dict[str, Any], bandwidth_gbps: float, layers: int) -> None:
    """Add ms, edges/s, GB/s and the bandwidth fraction to a timed record."""
    sec = rec["seconds"]
    b = layer_bytes(rec["graph"], rec["dim"])
    fwd, fb = sec["forward"]["median"], sec["forward_backward"]["median"]
    rec["ms"] = {"forward": fwd * 1e3, "forward_backward": fb * 1e3,
                 "forward_min": sec["forward"]["min"] * 1e3,
                 "forward_max": sec["forward"]["max"] * 1e3,
                 "forward_backward_min": sec["forward_backward"]["min"] * 1e3,
                 "forward_backward_max": sec["forward_backward"]["max"] * 1e3}
    rec["fb_over_forward"] = fb / fwd
    rec["bytes_per_layer"] = b
    rec["edges_per_s"] = layers * rec["graph"]["nnz"] / fwd
    rec["gbps"] = {"effective": layers * b["effective"] / fwd / 1e9,
                   "compulsory": layers * b["compulsory"] / fwd / 1e9}
    rec["bandwidth_gbps"] = bandwidth_gbps
    rec["bandwidth_fraction"] = rec["gbps"]["effective"] / bandwidth_gbps
    rec["compulsory_fraction"] = rec["gbps"]["compulsory"] / bandwidth_gbps


def bound_of(rec: dict[str, Any], by_backend: dict[str, dict[str, Any]], l3: int | None) -> str:
    """What limits a backend, from its figures (CPU): bandwidth, gather latency or overhead."""
    b, name = rec["bytes_per_layer"], rec["backend"]
    table_mib, msg_mib = b["table"] / 2**20, b["gathered"] / 2**20
    in_cache = l3 is not None and b["table"] < 0.75 * l3
    if rec["device"].startswith("cuda"):
        return f"{rec['bandwidth_fraction']:.0%} of device copy bandwidth"
    ref = by_backend.get(GRAPHREC)
    rel = f"{rec['ms']['forward'] / ref['ms']['forward']:.1f}x graphrec's forward" if ref else ""
    if name in (GRAPHREC, "torch_csr_autograd", "pyg_lgconv_csr"):
        where = (f"rows from L3 (table {table_mib:,.0f} MiB fits); DRAM moves only "
                 f"{rec['gbps']['compulsory']:.1f} GB/s" if in_cache else
                 f"rows from DRAM (table {table_mib:,.0f} MiB > L3)")
        fwd = f"gather latency: {where}"
        if name == GRAPHREC:
            tiling = rec.get("tiling", {})
            if tiling.get("tiles", 1) > 1:
                bands = ("users x item blocks, items x user blocks" if tiling.get("bands") == 2
                         else "column blocks over all rows")
                fwd = (f"gather latency, cut into {tiling['tiles']} tiles ({bands}) gathering "
                       f"from <= {tiling['slice_mib']:,.0f} MiB of the {table_mib:,.0f} MiB "
                       "table, one pass over their band's output each")
            return f"{fwd}; backward = one more product"
        if name == "torch_csr_autograd":
            return f"forward: same kernel; backward: overhead, A~^T rebuilt (sorted) each call"
        if name == "pyg_lgconv_csr":
            return ("forward: the same CSR kernel (torch.sparse.mm via MessagePassing); "
                    "backward: overhead, torch's A~^T per call")
        return fwd
    if name == "torch_coo":
        return f"overhead: torch's COO kernel, {rel} on the same bytes"
    if name == "torch_sparse":
        return f"overhead: torch_sparse's own CSR kernel, {rel} on the same bytes"
    if name in SLOW_BACKENDS:
        return (f"overhead: {msg_mib:,.0f} MiB of per-edge messages in fresh memory every call "
                "(first-touch page faults), then gather, scale and scatter passes"
                f"{'; normalized every call' if name == EDGE_INDEX else ''}")
    if name == "dense":
        n, dim = rec["graph"]["nodes"], rec["dim"]
        gflops = 2 * n * n * dim / rec["ms"]["forward"] / 1e6
        return f"compute: dense GEMM over N^2 = {n * n:.1e} entries, {gflops:,.0f} GFLOP/s"
    return ""


def layer_records(res: dict[str, Any], plan: Plan, bandwidth: dict[str, float],
                  ) -> list[dict[str, Any]]:
    """One record per backend of a timing child (layer), and per encoder."""
    info, dim, device = res["info"], res["dim"], res["device"]
    dev = device.split(":")[0]
    out = []
    for section, group, layers in (("layer", res["backends"], 1),
                                   ("encoder", res["encoders"], NUM_LAYERS)):
        for name, r in group.items():
            rec: dict[str, Any] = {
                "name": f"{info['graph']}/F{dim}/{device}/{name}"
                        + ("" if layers == 1 else f"/{NUM_LAYERS}-layer"),
                "section": section, "backend": name, "layers": layers, "dim": dim,
                "device": device, "device_name": res.get("device_name"),
                "dataset": info["graph"], "graph": info, "status": r["status"],
                "load_avg_1m": res["load_avg_1m"], "threads": res["threads"]}
            if r["status"] == "ok":
                rec.update(seconds=r["seconds"], check=r["check"],
                           prepare_s=r.get("prepare_s"))
                if "tiling" in r:
                    rec["tiling"] = r["tiling"]
                derive(rec, bandwidth[dev], layers)
            else:
                rec["reason"] = r["reason"]
            out.append(rec)
    for rec in out:  # speed-ups against LGConv over edge_index, same run, same section
        base = next((r for r in out if r["backend"] == EDGE_INDEX and r["status"] == "ok"
                     and r["section"] == rec["section"]), None)
        if rec["status"] == "ok" and base is not None:
            rec["speedup_vs_edge_index"] = {
                m: base["seconds"][m]["median"] / rec["seconds"][m]["median"]
                for m in ("forward", "forward_backward")}
    return out


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(time) against log(edges)."""
    if len(points) < 2:
        return None
    xs, ys = [math.log(p[0]) for p in points], [math.log(p[1]) for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


def scaling_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend, device and embedding size: the log-log slope of time against edges over
    the synthetic graphs."""
    out = []
    keys = sorted({(r["backend"], r["device"], r["dim"]) for r in records
                   if r["section"] == "layer" and r["status"] == "ok"})
    for backend, device, dim in keys:
        rows = sorted((r for r in records if r["section"] == "layer" and r["status"] == "ok"
                       and r["backend"] == backend and r["device"] == device
                       and r["dim"] == dim and r["graph"]["spec"].startswith("syn:")),
                      key=lambda r: r["graph"]["nnz"])
        if len(rows) < 2:
            continue
        fit = {m: slope([(r["graph"]["nnz"], r["seconds"][m]["median"]) for r in rows])
               for m in ("forward", "forward_backward")}
        segments = {m: [slope([(a["graph"]["nnz"], a["seconds"][m]["median"]),
                               (b["graph"]["nnz"], b["seconds"][m]["median"])])
                        for a, b in zip(rows, rows[1:])] for m in ("forward", "forward_backward")}
        out.append({"name": f"scaling/F{dim}/{device}/{backend}", "section": "scaling",
                    "backend": backend, "device": device, "dim": dim,
                    "nnz": [r["graph"]["nnz"] for r in rows],
                    "forward_ms": [r["ms"]["forward"] for r in rows],
                    "forward_backward_ms": [r["ms"]["forward_backward"] for r in rows],
                    "loglog_slope": fit, "segment_slopes": segments,
                    "table_bytes": [r["bytes_per_layer"]["table"] for r in rows]})
    return out


def memory_record(res: dict[str, Any]) -> dict[str, Any]:
    info, mem = res["info"], res["memory"]
    model = mem["adjacency_mib"] + mem["embeddings_mib"]
    return {"name": f"memory/{info['graph']}/F{res['dim']}/{res['device']}/{res['backend']}",
            "section": "memory", "backend": res["backend"], "dim": res["dim"],
            "device": res["device"], "dataset": info["graph"], "graph": info, "status": "ok",
            "memory_mib": mem, "adjacency_plus_embeddings_mib": model,
            "forward_over_model": mem["forward_peak_mib"] / model,
            "forward_backward_over_model": mem["forward_backward_peak_mib"] / model,
            "load_avg_1m": res["load_avg_1m"], "child_seconds": res["child_seconds"]}


def targets(records: list[dict[str, Any]], quick: bool) -> dict[str, Any]:
    """The issue's targets for the graphrec backend (Gowalla, F=64, CPU): measured, target and
    verdict (None where the figure is missing, and with --quick)."""
    def find(section: str, backend: str, graph: str = TARGET_GRAPH, dim: int = TARGET_DIM
             ) -> dict[str, Any] | None:
        return next((r for r in records if r["section"] == section and r["backend"] == backend
                     and r.get("dataset") == graph and r.get("dim") == dim
                     and r["device"] == "cpu" and r["status"] == "ok"), None)

    g = find("layer", GRAPHREC)
    out: dict[str, Any] = {}
    if g is not None:
        sec = g["seconds"]
        best_fwd, best_fb = sec["forward"]["min"], sec["forward_backward"]["min"]
        out["fb_over_forward"] = {"measured": g["fb_over_forward"], "target": TARGET_FB_RATIO,
                                  "best": best_fb / best_fwd,
                                  "passed": g["fb_over_forward"] <= TARGET_FB_RATIO}
        out["bandwidth_fraction"] = {
            "measured": g["bandwidth_fraction"], "target": TARGET_BW_FRACTION,
            "best": g["bandwidth_fraction"] * sec["forward"]["median"] / best_fwd,
            "passed": g["bandwidth_fraction"] >= TARGET_BW_FRACTION}
        e = find("layer", EDGE_INDEX)
        if "speedup_vs_edge_index" in g and e is not None:
            s = g["speedup_vs_edge_index"]
            out["speedup_vs_edge_index"] = {
                "measured": s["forward"], "target": TARGET_SPEEDUP,
                "best": e["seconds"]["forward"]["min"] / best_fwd,
                "passed": s["forward"] >= TARGET_SPEEDUP}
            out["speedup_vs_edge_index_fb"] = {
                "measured": s["forward_backward"], "target": TARGET_SPEEDUP,
                "best": e["seconds"]["forward_backward"]["min"] / best_fb,
                "passed": s["forward_backward"] >= TARGET_SPEEDUP}
    for r in records:
        if r["section"] == "scaling" and r["backend"] == GRAPHREC and r["device"] == "cpu":
            s = r["loglog_slope"]["forward"]
            out[f"slope_F{r['dim']}"] = {"measured": s, "target": list(TARGET_SLOPE),
                                         "passed": TARGET_SLOPE[0] <= s <= TARGET_SLOPE[1],
                                         "nnz": [r["nnz"][0], r["nnz"][-1]]}
    for r in records:
        if r["section"] == "memory" and r["backend"] == GRAPHREC and r["device"] == "cpu":
            out[f"memory_{r['dataset']}_F{r['dim']}"] = {
                "measured": r["forward_over_model"], "target": TARGET_MEMORY_FACTOR,
                "passed": r["forward_over_model"] <= TARGET_MEMORY_FACTOR}
    if quick:
        for v in out.values():
            v["passed"] = None
    return out


# --------------------------------------------------------------------------------------------
# Markdown


def _ms(rec: dict[str, Any], mode: str) -> str:
    m = rec["ms"]
    return f"{m[mode]:,.1f} ({m[mode + '_min']:,.1f}–{m[mode + '_max']:,.1f})"


def _fmt_ms(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}" if v >= 1 else f"{v:.2f}"


def _pass(v: bool | None) -> str:
    return {True: "**pass**", False: "**FAIL**", None: "–"}[v]


def _find(records: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(k) == v for k, v in kw.items())]


def main_table(records: list[dict[str, Any]], dataset: str, dim: int, device: str,
               l3: int | None) -> list[str]:
    rows = _find(records, section="layer", dataset=dataset, dim=dim, device=device)
    if not rows:
        return []
    ok = {r["backend"]: r for r in rows if r["status"] == "ok"}
    info = rows[0]["graph"]
    b = layer_bytes(info, dim)
    head = ["backend", "forward ms", "fwd+bwd ms", "fwd+bwd / fwd", "edges/s (fwd)",
            "effective GB/s", "% of bandwidth", "compulsory GB/s", "× vs edge_index (fwd / "
            "fwd+bwd)", "what bounds it", "check: max rel. error (out / grad)"]
    lines = [f"{info['users']:,} users + {info['items']:,} items = {info['nodes']:,} nodes, "
             f"{info['interactions']:,} interactions, {info['nnz']:,} adjacency non-zeros; "
             f"F = {dim}; bytes per layer forward: effective {b['effective'] / 1e6:,.0f} MB "
             f"(indices {b['indices'] / 1e6:,.1f} + values {b['values'] / 1e6:,.1f} + gathered "
             f"rows {b['gathered'] / 1e6:,.0f} + output {b['output'] / 1e6:,.1f}), compulsory "
             f"{b['compulsory'] / 1e6:,.0f} MB (the table of {b['table'] / 1e6:,.1f} MB read "
             "once).", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        name = f"`{r['backend']}`"
        if r["status"] != "ok":
            lines.append(f"| {name} | skipped: {r['reason']} |" + " |" * (len(head) - 2))
            continue
        sp = r.get("speedup_vs_edge_index")
        lines.append("| " + " | ".join([
            f"**{name}**" if r["backend"] == GRAPHREC else name,
            _ms(r, "forward"), _ms(r, "forward_backward"), f"{r['fb_over_forward']:.2f}",
            f"{r['edges_per_s'] / 1e6:,.0f} M", f"{r['gbps']['effective']:.1f}",
            f"{r['bandwidth_fraction']:.0%}", f"{r['gbps']['compulsory']:.2f}",
            f"{sp['forward']:.1f} / {sp['forward_backward']:.1f}" if sp else "–",
            bound_of(r, ok, l3),
            f"{r['check']['forward']['max_rel_err']:.0e} / "
            f"{r['check']['gradient']['max_rel_err']:.0e}"]) + " |")
    return lines


def encoder_table(records: list[dict[str, Any]], device: str) -> list[str]:
    rows = [r for r in records if r["section"] == "encoder" and r["device"] == device]
    if not rows:
        return []
    head = ["graph", "F", "backend", "forward ms", "fwd+bwd ms", "fwd+bwd / fwd",
            "edges/s (fwd, 3 layers)", "× vs edge_index (fwd / fwd+bwd)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        first = [r["dataset"], str(r["dim"]), f"`{r['backend']}`"]
        if r["status"] != "ok":
            lines.append("| " + " | ".join(first + [f"skipped: {r['reason']}"]) + " |"
                         + " |" * (len(head) - 4))
            continue
        sp = r.get("speedup_vs_edge_index")
        lines.append("| " + " | ".join(first + [
            _ms(r, "forward"), _ms(r, "forward_backward"), f"{r['fb_over_forward']:.2f}",
            f"{r['edges_per_s'] / 1e6:,.0f} M",
            f"{sp['forward']:.1f} / {sp['forward_backward']:.1f}" if sp else "–"]) + " |")
    return lines


def scaling_table(records: list[dict[str, Any]], dim: int, device: str) -> list[str]:
    rows = _find(records, section="layer", dim=dim, device=device)
    if not rows:
        return []
    graphs = sorted({(r["graph"]["nnz"], r["dataset"]) for r in rows})
    names = [b for b in BACKENDS if any(r["backend"] == b and r["status"] == "ok" for r in rows)]
    head = (["graph", "non-zeros", "table MiB"] + [f"`{b}`" for b in names]
            + ["`graphrec` ns per non-zero (fwd)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for nnz, ds in graphs:
        any_rec = next(r for r in rows if r["dataset"] == ds)
        cells = [ds, f"{nnz:.2e}", f"{any_rec['graph']['nodes'] * dim * 4 / 2**20:,.0f}"]
        for b in names:
            r = next((r for r in rows if r["dataset"] == ds and r["backend"] == b), None)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append("–" if "not installed" in r["reason"] else
                             "skip (memory)" if "GiB" in r["reason"] else "skip (time)")
            else:
                cells.append(f"{_fmt_ms(r['ms']['forward'])} / "
                             f"{_fmt_ms(r['ms']['forward_backward'])}")
        g = next((r for r in rows if r["dataset"] == ds and r["backend"] == GRAPHREC
                  and r["status"] == "ok"), None)
        cells.append(f"{g['ms']['forward'] * 1e6 / nnz:.1f}" if g else "")
        lines.append("| " + " | ".join(cells) + " |")
    slopes = {r["backend"]: r for r in records
              if r["section"] == "scaling" and r["dim"] == dim and r["device"] == device}
    cells = ["log-log slope over the synthetic graphs", "", ""]
    for b in names:
        s = slopes.get(b)
        cells.append(f"{s['loglog_slope']['forward']:.2f} / "
                     f"{s['loglog_slope']['forward_backward']:.2f}" if s else "")
    lines.append("| " + " | ".join(cells + [""]) + " |")
    cells = ["slope per step (forward)", "", ""]
    for b in names:
        s = slopes.get(b)
        cells.append(" → ".join(f"{x:.2f}" for x in s["segment_slopes"]["forward"]) if s else "")
    lines.append("| " + " | ".join(cells + [""]) + " |")
    return lines


def memory_table(records: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in records if r["section"] == "memory"]
    if not rows:
        return []
    head = ["graph", "F", "backend", "adjacency + embeddings MiB",
            "structure MiB (CSR storage held)", "resident after setup MiB",
            "forward peak MiB (× adj+emb)", "fwd+bwd peak MiB (×)", "3-layer forward (×)",
            "3-layer fwd+bwd (×)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        m, model = r["memory_mib"], r["adjacency_plus_embeddings_mib"]

        def cell(key: str) -> str:
            v = m.get(key)
            return f"{v:,.0f} ({v / model:.2f}×)" if v is not None else "–"
        lines.append("| " + " | ".join([
            r["dataset"], str(r["dim"]), f"`{r['backend']}`", f"{model:,.0f}",
            f"{m['structure_mib']:,.0f} ({m['adjacency_storage_mib']:,.0f})",
            f"{m['resident_mib']:,.0f}", cell("forward_peak_mib"),
            cell("forward_backward_peak_mib"), cell("encoder_forward_peak_mib"),
            cell("encoder_forward_backward_peak_mib")]) + " |")
    return lines


def target_table(t: dict[str, Any]) -> list[str]:
    if not t:
        return []
    labels = {
        "fb_over_forward": ("forward+backward of a layer / its forward", "≤ {:.1f}", "{:.2f}"),
        "bandwidth_fraction": ("forward effective GB/s / measured bandwidth", "≥ {:.0%}",
                               "{:.0%}"),
        "speedup_vs_edge_index": ("forward speed-up vs `LGConv` over `edge_index`", "≥ {:.0f}×",
                                  "{:.1f}×"),
        "speedup_vs_edge_index_fb": ("forward+backward speed-up vs `LGConv` over `edge_index` "
                                     "(also reported)", "≥ {:.0f}×", "{:.1f}×"),
    }
    lines = ["| target (graphrec backend) | measured (medians) | from the fastest runs | "
             "target | result |", "|---|---|---|---|---|"]
    for key, v in t.items():
        if key in labels:
            label, tfmt, mfmt = labels[key]
            lines.append(f"| {label} | {mfmt.format(v['measured'])} | "
                         f"{mfmt.format(v['best'])} | {tfmt.format(v['target'])} | "
                         f"{_pass(v['passed'])} |")
        elif key.startswith("slope_"):
            lines.append(f"| time ∝ edges: log-log slope of the forward over the synthetic "
                         f"graphs ({v['nnz'][0]:.0e}–{v['nnz'][1]:.0e} non-zeros), "
                         f"F = {key.split('_F')[1]} | {v['measured']:.2f} | | "
                         f"{v['target'][0]}–{v['target'][1]} | {_pass(v['passed'])} |")
        elif key.startswith("memory_"):
            ds, dim = key[len("memory_"):].rsplit("_F", 1)
            lines.append(f"| peak memory of a forward layer / (adjacency + embeddings), {ds}, "
                         f"F = {dim} | {v['measured']:.2f}× | | ≤ {v['target']:g}× | "
                         f"{_pass(v['passed'])} |")
    return lines


def skipped_lines(records: list[dict[str, Any]]) -> list[str]:
    """The skipped layer measurements, grouped by backend and reason."""
    groups: dict[str, dict[str, list[str]]] = {}
    for r in records:
        if r["section"] != "layer" or r["status"] != "skipped":
            continue
        reason = r["reason"]
        kind = ("not installed" if "not installed" in reason else
                "to keep the default run short (`--all-backends` runs it)"
                if reason.startswith("time budget") else reason)
        where = f"{r['dataset']} F={r['dim']}" + ("" if r["device"] == "cpu" else
                                                  f" {r['device']}")
        groups.setdefault(r["backend"], {}).setdefault(kind, []).append(where)
    if not groups:
        return []
    lines = ["Skipped:", ""]
    for backend, kinds in groups.items():
        parts = []
        for kind, wheres in kinds.items():
            parts.append(kind if kind == "not installed" else f"{kind}: {', '.join(wheres)}")
        lines.append(f"* `{backend}`: " + "; ".join(parts))
    return lines + [""]


def markdown(records: list[dict[str, Any]], run: dict[str, Any]) -> str:
    mach, ver = run["machine"], run["versions"]
    bw = run["bandwidth"]
    loads = [x for r in records if r.get("load_avg_1m") for x in r["load_avg_1m"][:1]
             if x is not None]
    l3 = run.get("l3_bytes")
    lines = [
        f"Propagation benchmark, {run['timestamp']} (commit `{run['git_commit']}`), whole "
        f"script {run['script_seconds']:.0f} s{' (--quick)' if run['quick'] else ''}"
        + (f", of which {run['waited_seconds']:.0f} s waiting for a quiet machine"
           if run.get("waited_seconds") else "") + ".",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores ({mach['usable_cores']} usable), "
        f"{mach['memory_gib']} GiB RAM"
        + (f", L3 {l3 / 2**20:g} MiB" if l3 else "") + f", {mach['system']}; torch threads "
        f"{run['threads']}. Python {ver['python']}, torch {ver['torch']}, torch_geometric "
        f"{ver['torch_geometric']}, numpy {ver['numpy']}, torch_sparse "
        f"{ver['torch_sparse'] or 'not installed'}, torch_scatter "
        f"{ver['torch_scatter'] or 'not installed'}.",
        "",
        "Memory bandwidth measured in this run (copy of a "
        f"{run['copy_mib']:,} MiB float32 tensor, read + write bytes / time, median of 10): "
        + "; ".join(f"{dev}: {v['gbps']:.1f} GB/s (start {v['start']:.1f}, end {v['end']:.1f})"
                    for dev, v in bw.items()) + ". "
        f"Timings: median (min–max) of {run['repeats']} timed calls after {run['warmup']} "
        "warm-up call(s) and the correctness check, forward and forward+backward calls "
        "alternating; one child process per graph and embedding size. 1-minute load average "
        "at the children's starts: "
        + (f"{min(loads):.2f}–{max(loads):.2f}." if loads else "unknown."),
        "",
    ]
    t = run["targets"]
    devices = sorted({r["device"] for r in records if r["section"] == "layer"})
    datasets = []
    for r in records:
        if r["section"] == "layer" and r["dataset"] not in datasets:
            datasets.append(r["dataset"])
    main_ds = TARGET_GRAPH if TARGET_GRAPH in datasets else (datasets[-1] if datasets else None)
    dims = sorted({r["dim"] for r in records if r["section"] == "layer"})
    for device in devices:
        if main_ds is None:
            break
        for dim in dims:
            tbl = main_table(records, main_ds, dim, device, l3)
            if tbl:
                lines += [f"### {main_ds}, F = {dim}, {device}: one propagation layer", ""]
                lines += tbl + [""]
            if dim == TARGET_DIM and device == "cpu" and t:
                lines += ["Targets of the issue for the backend graphrec uses "
                          f"({TARGET_GRAPH}, F = {TARGET_DIM}, CPU; the scaling and memory "
                          "rows as named)" + (": not checked with --quick, whose graphs they "
                                              "are not stated for" if run["quick"] else "")
                          + ":", ""]
                lines += target_table(t) + [""]
    for device in devices:
        enc = encoder_table(records, device)
        if enc:
            lines += [f"### Full {NUM_LAYERS}-layer propagation (`LightGCNEncoder({NUM_LAYERS})` "
                      f"and the same loop per backend), {device}", ""] + enc + [""]
    for device in devices:
        for dim in dims:
            tbl = scaling_table(records, dim, device)
            if tbl:
                lines += [f"### Scaling, F = {dim}, {device}: forward / forward+backward ms "
                          "per layer", ""] + tbl + [""]
    mem = memory_table(records)
    if mem:
        lines += ["### Peak memory (one backend per child process; peak minus the memory in use "
                  "before the adjacency and the embeddings were built)", ""] + mem + [""]
    lines += skipped_lines(records)
    if run["plot"]:
        lines += [f"Plot: {run['plot']}.", ""]
    lines += [f"Note: {n}." for n in run["notes"]]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# The run


def make_plan(args: argparse.Namespace) -> Plan:
    notes: list[str] = []
    quick = args.quick
    data = None
    graphs = list(QUICK_GRAPHS if quick else FULL_GRAPHS)
    if args.graphs:
        graphs = [g.strip() for g in args.graphs.split(",") if g.strip()]
    if "gowalla" in graphs:
        gowalla = resolve_gowalla(args.data)
        if (gowalla / "train.txt").exists() and (gowalla / "test.txt").exists():
            data = gowalla
        else:
            print(f"propagation: Gowalla not found at {gowalla} (no train.txt/test.txt there). "
                  "Pass --data or set GRAPHREC_DATA to the folder holding gowalla/. Using the "
                  "synthetic graphs only; the targets are Gowalla's and are not checked.",
                  file=sys.stderr)
            notes.append(f"Gowalla missing at {gowalla}: synthetic graphs only")
            graphs.remove("gowalla")
    dims = [int(d) for d in args.dims.split(",")] if args.dims else list(
        QUICK_DIMS if quick else FULL_DIMS)
    backends = args.backends.split(",") if args.backends else list(BACKENDS)
    encoders = ([] if args.encoders == "none" else args.encoders.split(",")) if args.encoders \
        else list(ENCODER_BACKENDS)
    out = Path(args.out) if args.out else (None if quick else DEFAULT_RESULTS)
    return Plan(quick=quick, data=data, graphs=graphs, dims=dims, devices=[],
                backends=backends, encoders=encoders, out=out, threads=args.threads,
                warmup=args.warmup, min_repeats=args.min_repeats or (3 if quick else 5),
                max_repeats=args.max_repeats or (5 if quick else 25),
                budget=args.budget if args.budget is not None else (0.3 if quick else 2.0),
                copy_mib=args.copy_mib or (256 if quick else 1024),
                all_backends=args.all_backends, memory=not args.no_memory,
                max_load=args.max_load, max_wait=0.0 if quick else args.max_wait,
                max_total_wait=0.0 if quick else args.max_total_wait, notes=notes)


def encoders_for(plan: Plan, spec: str) -> list[str]:
    """The 3-layer encoders run on Gowalla (without it, on 10^6), and on every graph with
    --quick: on the other graphs they would cost 3 layers' time and tell nothing new."""
    main = "gowalla" if plan.data is not None else "syn:1000000"
    return plan.encoders if spec == main or plan.quick else []


def memory_jobs(plan: Plan, device: str) -> list[tuple[str, int, str]]:
    """(graph, dim, backend) of the memory children: every CPU backend that runs on the main
    graph at F=64, graphrec and torch's CSR on the largest graph."""
    main = ("gowalla" if "gowalla" in plan.graphs else "syn:1000000"
            if "syn:1000000" in plan.graphs else plan.graphs[-1])
    largest = max((g for g in plan.graphs if g.startswith("syn:")),
                  key=lambda g: float(g.split(":")[1]), default=None)
    dim = TARGET_DIM if TARGET_DIM in plan.dims else plan.dims[0]
    jobs = []
    main_backends = ([GRAPHREC] if plan.quick else
                     [b for b in ("graphrec", "torch_csr_autograd", "torch_coo", "pyg_lgconv_csr",
                                  "pyg_lgconv_edge_index", "index_add") if b in plan.backends])
    jobs += [(main, dim, b) for b in main_backends]
    if largest and largest != main and not plan.quick:
        jobs += [(largest, dim, b) for b in (GRAPHREC, "torch_csr_autograd")
                 if b in plan.backends]
    return jobs


def run_plan(plan: Plan) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    start = time.monotonic()
    common = ["--warmup", str(plan.warmup), "--min-repeats", str(plan.min_repeats),
              "--max-repeats", str(plan.max_repeats), "--budget", str(plan.budget)]
    if plan.all_backends:
        common.append("--all-backends")
    bw_raw: dict[str, list[dict[str, Any]]] = {}

    def bandwidth(device: str) -> None:
        _log(f"memory bandwidth ({device}, copy of {plan.copy_mib} MiB) ...")
        res = run_child("bandwidth", plan, ["--device", device, "--copy-mib", str(plan.copy_mib)])
        bw_raw.setdefault(device, []).append(res)

    wait_for_quiet(plan)
    _log(f"probe and memory bandwidth (cpu, copy of {plan.copy_mib} MiB) ...")
    probe = run_child("probe", plan, ["--copy-mib", str(plan.copy_mib)])
    bw_raw["cpu"] = [{**probe["bandwidth"], "load_avg_1m": probe["load_avg_1m"]}]
    versions = probe["versions"]
    plan.devices = ["cpu"] + (["cuda"] if probe["cuda"] else [])
    if not probe["cuda"]:
        plan.notes.append("no CUDA device in this run: CPU only")
    for device in plan.devices[1:]:
        bandwidth(device)
    timing_results = []
    for device in plan.devices:
        graphs = list(plan.graphs)
        if device == "cuda" and not plan.quick and probe["cuda"][0]["memory_gib"] >= \
                GPU_EXTRA_MIN_GIB and GPU_EXTRA_GRAPH not in graphs:
            graphs.append(GPU_EXTRA_GRAPH)
        for spec in graphs:
            for dim in plan.dims:
                waited = wait_for_quiet(plan)
                _log(f"timing {spec} F={dim} on {device} ...")
                res = run_child("timing", plan, common + [
                    "--graph", spec, "--dim", str(dim), "--device", device,
                    "--backends", ",".join(plan.backends),
                    "--encoders", ",".join(encoders_for(plan, spec))])
                res["waited_s"] = round(waited, 1)
                timing_results.append(res)
    memory_results = []
    if plan.memory:
        for device in plan.devices:
            for spec, dim, backend in memory_jobs(plan, device):
                _log(f"memory {spec} F={dim} {backend} on {device} ...")
                memory_results.append(run_child(
                    "memory", plan, ["--graph", spec, "--dim", str(dim), "--device", device,
                                     "--backend", backend],
                    env={"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}))
    if not plan.quick:  # the bandwidth again at the end: the figure is the median of both
        for device in plan.devices:
            wait_for_quiet(plan)
            bandwidth(device)
    bw = {}
    for device, runs in bw_raw.items():
        pooled = [x for r in runs for x in r["gbps"]["runs"]]
        bw[device] = {"gbps": sorted(pooled)[len(pooled) // 2],
                      "start": runs[0]["gbps"]["median"], "end": runs[-1]["gbps"]["median"]}
    bw_by_dev = {d: v["gbps"] for d, v in bw.items()}
    records: list[dict[str, Any]] = []
    for device, runs in bw_raw.items():
        for i, r in enumerate(runs):
            records.append({"name": f"bandwidth/{device}/{'start' if i == 0 else 'end'}",
                            "section": "bandwidth", "backend": None, "device": device,
                            "status": "ok", "bytes": r["bytes"], "seconds": r["seconds"],
                            "gbps": r["gbps"], "load_avg_1m": r["load_avg_1m"],
                            "bandwidth_gbps": bw[device]["gbps"]})
    for res in timing_results:
        recs = layer_records(res, plan, bw_by_dev)
        for rec in recs:
            rec["waited_s"] = res["waited_s"]
            rec["child_seconds"] = res["child_seconds"]
        records += recs
    records += scaling_records(records)
    records += [memory_record(r) for r in memory_results if "skipped" not in r]
    plan.notes += [f"memory of {r['backend']} on {r['info']['graph']} F={r['dim']} not "
                   f"measured: {r['skipped']}" for r in memory_results if "skipped" in r]
    l3 = l3_bytes()
    for rec in records:
        if rec["section"] in ("layer", "encoder") and rec["status"] == "ok":
            peers = {r["backend"]: r for r in records if r["section"] == rec["section"]
                     and r.get("dataset") == rec["dataset"] and r.get("dim") == rec["dim"]
                     and r["device"] == rec["device"] and r["status"] == "ok"}
            rec["bound"] = bound_of(rec, peers, l3)
    tgt = targets(records, plan.quick)
    run = {"machine": machine_info(), "versions": versions, "threads": plan.threads,
           "git_commit": git_commit(), "timestamp": timestamp, "quick": plan.quick,
           "bandwidth": bw, "copy_mib": plan.copy_mib, "l3_bytes": l3,
           "repeats": f"{plan.min_repeats}–{plan.max_repeats} (enough to fill "
                      f"{plan.budget:g} s)", "warmup": plan.warmup,
           "script_seconds": round(time.monotonic() - start, 1),
           "waited_seconds": round(plan.waited, 1), "targets": tgt,
           "notes": plan.notes, "plot": None}
    for rec in records:
        rec["targets"] = tgt if rec.get("backend") == GRAPHREC and rec.get("dataset") == \
            TARGET_GRAPH and rec.get("dim") == TARGET_DIM and rec["section"] == "layer" and \
            rec["device"] == "cpu" else None
        rec.update({k: run[k] for k in ("machine", "versions", "threads", "git_commit",
                                         "timestamp", "quick", "notes", "l3_bytes",
                                         "script_seconds", "waited_seconds")})
    return records, run


def print_summary(records: list[dict[str, Any]], run: dict[str, Any]) -> None:
    print(f"\nbandwidth: " + ", ".join(f"{d} {v['gbps']:.1f} GB/s" for d, v in
                                       run["bandwidth"].items()))
    print(f"{'graph':<16} {'F':>4} {'device':<6} {'backend':<24} {'fwd ms':>9} {'fb ms':>9} "
          f"{'fb/fwd':>6} {'GB/s':>6} {'%bw':>5}")
    for r in records:
        if r["section"] not in ("layer", "encoder"):
            continue
        name = r["backend"] + ("" if r["layers"] == 1 else f" x{r['layers']}")
        head = f"{r['dataset']:<16} {r['dim']:>4} {r['device']:<6} {name:<24}"
        if r["status"] != "ok":
            print(f"{head} skipped: {r['reason']}")
            continue
        print(f"{head} {r['ms']['forward']:>9.1f} {r['ms']['forward_backward']:>9.1f} "
              f"{r['fb_over_forward']:>6.2f} {r['gbps']['effective']:>6.1f} "
              f"{r['bandwidth_fraction']:>5.0%}")
    for r in records:
        if r["section"] == "memory":
            m = r["memory_mib"]
            print(f"memory {r['dataset']} F={r['dim']} {r['backend']}: adj+emb "
                  f"{r['adjacency_plus_embeddings_mib']:,.0f} MiB, forward peak "
                  f"{m['forward_peak_mib']:,.0f} MiB ({r['forward_over_model']:.2f}x), "
                  f"fwd+bwd {m['forward_backward_peak_mib']:,.0f} MiB")
    for key, v in run["targets"].items():
        print(f"target {key}: measured {v['measured']:.3g}, target {v['target']}, "
              f"{ {True: 'pass', False: 'FAIL', None: '-'}[v['passed']]}")
    print(f"whole script {run['script_seconds']:.0f} s")


def write_results(records: list[dict[str, Any]], run: dict[str, Any], out: Path,
                  plan: Plan) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / JSONL_NAME, "a") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as tmp:
        tmp.write("".join(json.dumps(r) + "\n" for r in records))
    try:
        res = run_child("plot", plan, ["--records", tmp.name, "--png", str(out / PNG_NAME)])
    finally:
        os.unlink(tmp.name)
    if res.get("written"):
        run["plot"] = f"![time per layer against edges](propagation.png) (`{PNG_NAME}`)"
    else:
        run["notes"].append(f"no plot: {res.get('reason')} (pip install matplotlib to get one)")
        _log(f"no plot: {res.get('reason')}")
    (out / MD_NAME).write_text(markdown(records, run))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small synthetic graphs, F=64, few repeats; writes nothing unless --out")
    p.add_argument("--data", help="folder holding gowalla/ (or the Gowalla folder itself); "
                                  "default $GRAPHREC_DATA, else ../shared/data beside the checkout")
    p.add_argument("--out", help="results folder (default benchmarks/results; --quick: none)")
    p.add_argument("--graphs", help="comma-separated: gowalla, syn:E (E interactions); default "
                                    f"{','.join(FULL_GRAPHS)} (--quick: {','.join(QUICK_GRAPHS)})")
    p.add_argument("--dims", help="embedding sizes, comma-separated (default 64,256; --quick: 64)")
    p.add_argument("--backends", help=f"comma-separated subset of {','.join(BACKENDS)}")
    p.add_argument("--encoders", help="backends whose 3-layer encoder is timed (default "
                                      f"{','.join(ENCODER_BACKENDS)}; 'none' for none)")
    p.add_argument("--all-backends", action="store_true",
                   help="also run the slow backends on the large graphs (CPU time budget off)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds after the correctness check's calls (default 1; none "
                        "where a round takes over 1 s)")
    p.add_argument("--min-repeats", type=int, default=0,
                   help="timed calls at least (default 5, 3 where a round takes over 1 s; "
                        "--quick 3)")
    p.add_argument("--max-repeats", type=int, default=0,
                   help="timed calls at most (default 25; --quick 5)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed calls to aim for per measurement (default 2; --quick "
                        "0.3)")
    p.add_argument("--copy-mib", type=int, default=0,
                   help="size of the bandwidth copy (default 1024; --quick 256)")
    p.add_argument("--max-load", type=float, default=1.2,
                   help="wait for the 1-minute load average to drop below this before each "
                        "timing child (default 1.2)")
    p.add_argument("--max-wait", type=float, default=60.0,
                   help="wait at most this many seconds for a quiet machine before a child "
                        "(default 60)")
    p.add_argument("--max-total-wait", type=float, default=180.0,
                   help="wait at most this many seconds in all (default 180)")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--graph", help=argparse.SUPPRESS)
    p.add_argument("--dim", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--records", help=argparse.SUPPRESS)
    p.add_argument("--png", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        if args.backends is None:
            args.backends = ",".join(BACKENDS)
        if args.encoders is None:
            args.encoders = ""
        return child_main(args)
    plan = make_plan(args)
    try:
        with tempfile.TemporaryDirectory(prefix="graphrec-propagation-") as tmp:
            plan.work = Path(tmp)
            records, run = run_plan(plan)
            if plan.out is not None:
                write_results(records, run, plan.out, plan)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"propagation: {e}", file=sys.stderr)
        return 1
    print_summary(records, run)
    if plan.out is not None:
        print(f"\npropagation: appended {len(records)} lines to {plan.out / JSONL_NAME}; wrote "
              f"{plan.out / MD_NAME}" + (f" and {PNG_NAME}" if run["plot"] else ""))
    else:
        print("\npropagation: nothing written (--quick without --out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
