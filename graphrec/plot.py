"""``graphrec plot embeddings --run RUN``: a 2-D map of a run's item vectors, as a PNG.

``--source learned`` (the default) maps the model's item vectors (``item_vectors()`` of a
retriever: bpr, mf, lightgcn, sasrec, bert4rec, two-tower; other models have none and say so);
``--source text`` maps the item text embeddings ``text_emb`` of the run's data (added at
conversion with ``--text-cols``). ``--method pca`` (the default), ``tsne`` (scikit-learn) or
``umap`` (umap-learn) draws the map (:mod:`graphrec.projection`). Points are coloured by each
item's first genre when the items have a multi-hot feature (``class`` on ml-100k), with the
genre names in the legend; otherwise in one colour. The PNG goes into the run folder as
``embeddings_<source>_<method>.png`` (``--out`` names another file), written atomically.

Whatever the method, the command prints the explained variance ratio of the first two principal
axes and the items at both ends of the first one (titles when the items have them, else raw
ids): the axis along which the vectors vary most, often a readable one (popular and mainstream
against niche, light against serious). The axis sign follows the convention of
:func:`graphrec.projection.pca_2d` (its largest loading is positive), so which end is "low" is
arbitrary but fixed.

The item side features come from the run's data, read again as the run read it (its
``config.json``), or from ``--data`` when that file has moved; learned vectors without genre
features need no data at all.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphrec.cli import Parser, run
from graphrec.errors import GraphrecError

if TYPE_CHECKING:
    import torch

    from graphrec.checkpoint import Checkpoint
    from graphrec.data.graph import Dataset

log = logging.getLogger("graphrec.plot")

SOURCES = ("learned", "text")
METHODS = ("pca", "tsne", "umap")  # graphrec.projection.METHODS, without importing torch
#: the item attribute that holds text embeddings (graphrec.data.text.TEXT_ATTR)
TEXT_ATTR = "text_emb"
#: multi-hot feature names taken as the genre, in order of preference (else the first one)
GENRE_NAMES = ("genre", "class", "categor", "tag")
#: the most groups the legend shows; rarer genres are drawn as "other"
MAX_GROUPS = 19
NO_MATPLOTLIB = "matplotlib is not installed: pip install graphrec[plot]"


def parser(prog: str = "python -m graphrec.plot") -> argparse.ArgumentParser:
    """The command's arguments (no heavy imports)."""
    p = Parser(prog=prog, description="Plots of a trained run.")
    sub = p.add_subparsers(dest="plot", metavar="PLOT", required=True)
    e = sub.add_parser("embeddings", help="a 2-D map of the item vectors (PCA, t-SNE or UMAP)",
                       description="Map a run's item vectors to 2-D, colour them by genre, write "
                                   "a PNG and print the items at both ends of the first "
                                   "principal axis.")
    e.add_argument("--run", required=True, help="run folder written by graphrec train (or its model.pt)")
    e.add_argument("--source", choices=SOURCES, default="learned",
                   help="learned: the model's item vectors (default); text: the items' text "
                        "embeddings text_emb (convert with --text-cols)")
    e.add_argument("--method", choices=METHODS, default="pca",
                   help="pca (default), tsne (needs scikit-learn) or umap (needs umap-learn)")
    e.add_argument("--out", default=None, metavar="PNG",
                   help="the PNG (default: RUN/embeddings_<source>_<method>.png)")
    e.add_argument("--top", type=int, default=10, metavar="N",
                   help="items printed at each end of the first principal axis (default 10)")
    e.add_argument("--data", default=None, metavar="PATH",
                   help="read the item features from this file instead of the run's data "
                        "(when it has moved): a converted graph (.pt) or the raw file")
    e.add_argument("--seed", type=int, default=0, help="seed of t-SNE and UMAP (default 0)")
    return p


# --------------------------------------------------------------------------------------------
# What to map


def learned_vectors(ckpt: Checkpoint) -> torch.Tensor:
    """``[num_items, F]`` item vectors of the run's model; a one-line error for a model that
    has none (it does not score by inner products of user and item vectors)."""
    import torch

    from graphrec.models.base import Retriever

    with torch.no_grad():
        scorer = ckpt.model.scorer()
        for candidate in (scorer, ckpt.model):
            if isinstance(candidate, Retriever):
                return candidate.item_vectors().detach().cpu().float()
    raise GraphrecError(f"--source learned: model {ckpt.model_name} has no item vectors (it is "
                        "not a retriever: bpr, mf, lightgcn, sasrec, bert4rec, two-tower are); "
                        "try --source text")


def text_vectors(ds: Dataset) -> torch.Tensor:
    """The items' text embeddings ``text_emb`` as float32, or a one-line error saying how to
    add them."""
    store = ds.graph["item"]
    if TEXT_ATTR not in store:
        raise GraphrecError(f"--source text: the run's data has no item attribute {TEXT_ATTR}; "
                            "convert it with --text-cols (e.g. graphrec convert DATA -o graph.pt "
                            "--text-cols movie_title,class) and train on the graph")
    emb = store[TEXT_ATTR]
    if emb.dim() != 2 or emb.size(0) != ds.num_items:
        raise GraphrecError(f"--source text: {TEXT_ATTR} has shape {tuple(emb.shape)}, expected "
                            f"[{ds.num_items}, dim]")
    return emb.detach().cpu().float()


def run_data(ckpt: Checkpoint, data: str | None = None) -> Dataset:
    """The run's data set, read as the run read it (its saved config), or ``data`` instead:
    a one-line error when it cannot be read or holds other items than the run's."""
    import numpy as np

    from graphrec.config import resolve
    from graphrec.data.source import DataConfig, is_graph_file, load_data

    option = "--data" if data else "the run's data"
    try:
        cfg = resolve(ckpt.config, {}).data
    except GraphrecError:
        if not data:
            raise
        cfg = DataConfig()
    if data:  # a converted graph takes no reading options; a raw file reads as the run did
        cfg = (DataConfig(path=data) if is_graph_file(Path(data))
               else dataclasses.replace(cfg, path=data))
    log.info("reading the item features from %s", cfg.path or "the synthetic data set")
    ds = load_data(cfg)
    if len(ds.items) != len(ckpt.items) or not np.array_equal(ds.items.raw, ckpt.items.raw):
        raise GraphrecError(f"{option} ({cfg.path or 'synthetic'}) has other items than the run "
                            f"({len(ds.items):,} against {len(ckpt.items):,}); name the run's "
                            "data with --data")
    return ds


def genre_feature(features: dict[str, Any]) -> str | None:
    """The item feature to colour by: a multi-hot one (``features`` is the data's description,
    ``meta['features']['item']``) whose name contains one of :data:`GENRE_NAMES` (in that order
    of preference), else the first multi-hot one; ``None`` when there is none."""
    multi = [name for name, info in features.items()
             if isinstance(info, dict) and info.get("type") == "multi_hot"]
    for key in GENRE_NAMES:
        for name in multi:
            if key in name.lower():
                return name
    return multi[0] if multi else None


def primary_genres(multi_hot: torch.Tensor) -> torch.Tensor:
    """Each item's first genre: the index of the first set column of ``multi_hot
    [num_items, V]`` (the vocabulary's order; a multi-hot feature keeps no order per item), or
    ``-1`` for an item with none. Returns ``[num_items]`` int64."""
    import torch

    has = multi_hot > 0
    first = has.to(torch.int8).argmax(dim=1)  # argmax: the first maximum
    return torch.where(has.any(dim=1), first, torch.full_like(first, -1))


# --------------------------------------------------------------------------------------------
# Drawing


def groups_of(labels: torch.Tensor, names: list[str]) -> list[tuple[str, torch.Tensor]]:
    """``(legend text, item indices)`` per colour group, largest first: the
    :data:`MAX_GROUPS` most frequent labels by name, the rest as ``other``, ``-1`` as ``none``."""
    import torch

    counts = torch.bincount(labels[labels >= 0], minlength=len(names))
    present = [int(i) for i in torch.argsort(counts, descending=True, stable=True) if counts[i] > 0]
    shown, rest = present[:MAX_GROUPS], present[MAX_GROUPS:]
    groups = [(names[i], torch.nonzero(labels == i).flatten()) for i in shown]
    if rest:
        groups.append(("other", torch.nonzero(torch.isin(labels, torch.tensor(rest))).flatten()))
    if bool((labels < 0).any()):
        groups.append(("none", torch.nonzero(labels < 0).flatten()))
    return [(f"{name} ({idx.numel():,})", idx) for name, idx in groups]


def draw_map(coords: torch.Tensor, png_path: Path, *, title: str, axis_labels: tuple[str, str],
             groups: list[tuple[str, torch.Tensor]] | None = None, legend_title: str = "") -> None:
    """Draw ``coords [N, 2]`` as a scatter plot into ``png_path`` (atomically), one colour per
    group of ``groups`` (``(legend text, indices)``, drawn in order) or one colour without.
    Needs matplotlib (object API on the Agg canvas, no pyplot state)."""
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise GraphrecError(NO_MATPLOTLIB) from None
    from graphrec.utils import atomic_write_bytes

    xy = coords.detach().cpu().double().numpy()
    size = max(3.0, min(30.0, 12000.0 / max(len(xy), 1)))  # marker area, by the point count
    fig = Figure(figsize=(10, 7) if groups else (7.5, 7), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if groups:
        palette = colormaps["tab20"]  # its 10 strong colours first, then their light pairs
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        for k, (label, idx) in enumerate(groups):
            color = ("lightgray" if label.startswith(("none ", "other "))
                     else palette(order[k % 20]))
            pts = xy[idx.numpy()]
            ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=0.75, color=color, label=label,
                       linewidths=0)
        ax.legend(title=legend_title or None, loc="center left", bbox_to_anchor=(1.01, 0.5),
                  fontsize="small", markerscale=max(1.0, 20.0 / size) ** 0.5, frameon=False)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.75, color="tab:blue", linewidths=0)
    ax.set(title=title, xlabel=axis_labels[0], ylabel=axis_labels[1])
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(png_path, buffer.getvalue())


def ends_table(pc1: torch.Tensor, idx: torch.Tensor, raw_ids: Any,
               titles: list[str] | None) -> str:
    """The items ``idx`` as lines of ``PC1 coordinate, raw id[, title]`` (titles left-aligned
    last, so long ones do not push the numbers apart)."""
    ids = [str(raw_ids[i]) for i in idx.tolist()]
    width = max([len("item")] + [len(i) for i in ids])
    lines = [f"{'pc1':>8}  {'item':>{width}}" + ("  title" if titles else "")]
    for i, raw in zip(idx.tolist(), ids):
        lines.append(f"{float(pc1[i]):+8.4f}  {raw:>{width}}" + (f"  {titles[i]}" if titles else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The command


def main(argv: list[str] | None = None, prog: str = "python -m graphrec.plot") -> int:
    """The command: parse ``argv``, draw the plot, print what it shows."""
    args = parser(prog).parse_args(argv)
    return embeddings(args)


def embeddings(args: argparse.Namespace) -> int:
    """``plot embeddings``: map, colour, write the PNG, print the ends of the first axis."""
    if args.top < 0:
        raise GraphrecError(f"--top: must be at least 0, got {args.top}")
    if args.out is not None and Path(args.out).suffix.lower() != ".png":
        raise GraphrecError(f"--out: {args.out}: name a .png file")
    try:
        import matplotlib  # noqa: F401 - fail before any work
    except ImportError:
        raise GraphrecError(NO_MATPLOTLIB) from None
    from graphrec.checkpoint import load_checkpoint
    from graphrec.projection import extremes, pca_2d, project_2d, require

    require(args.method)  # a missing optional package: before the model loads
    ckpt = load_checkpoint(args.run)
    run_dir = ckpt.path.parent if ckpt.path else Path(args.run)
    features = ckpt.features.get("item", {})
    genre = genre_feature(features)
    ds = None
    if args.source == "text":
        ds = run_data(ckpt, args.data)
        vectors = text_vectors(ds)
        genre = genre_feature(ds.meta.get("features", {}).get("item", {}))
        made = ds.meta.get("text") or {}
        what = (f"text embeddings {TEXT_ATTR}"
                + (f" (of {','.join(made['cols'])} by {made['model']})" if made.get("cols") else ""))
    else:
        vectors = learned_vectors(ckpt)
        what = f"{ckpt.model_name} learned item vectors"
        if genre is not None:
            try:
                ds = run_data(ckpt, args.data)
            except GraphrecError as e:
                log.warning("no genre colours: %s", e)
                genre = None

    pca = pca_2d(vectors, what)
    if args.method == "pca":
        coords = pca.coords
        axis_labels = (f"PC1 ({100 * float(pca.explained[0]):.1f}% of the variance)",
                       f"PC2 ({100 * float(pca.explained[1]):.1f}%)")
    else:
        log.info("%s of %s items (may take a while)", args.method, f"{vectors.size(0):,}")
        coords = project_2d(vectors, args.method, args.seed, what)
        name = {"tsne": "t-SNE", "umap": "UMAP"}[args.method]
        axis_labels = (f"{name} 1", f"{name} 2")  # the PCA printout below holds either way

    groups, legend_title = None, ""
    if genre is not None and ds is not None and genre in ds.graph["item"]:
        info = ds.meta.get("features", {}).get("item", {}).get(genre) or {}
        names = [str(v) for v in info.get("vocab", [])]
        labels = primary_genres(ds.graph["item"][genre])
        names += [f"#{i}" for i in range(len(names), ds.graph["item"][genre].size(1))]
        groups, legend_title = groups_of(labels, names), f"first {genre}"
    png = Path(args.out) if args.out else run_dir / f"embeddings_{args.source}_{args.method}.png"
    method_name = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}[args.method]
    title = f"{what}\n{run_dir.name}: {vectors.size(0):,} items, {method_name}"
    draw_map(coords, png, title=title, axis_labels=axis_labels, groups=groups,
             legend_title=legend_title)

    titles = ckpt.titles
    low, high = extremes(pca.coords[:, 0], args.top)
    print(f"{what}: {vectors.size(0):,} items x {vectors.size(1)} dimensions")
    print(f"explained variance ratio: PC1 {float(pca.explained[0]):.4f}, "
          f"PC2 {float(pca.explained[1]):.4f}")
    for end, idx in (("low", low), ("high", high)):
        if not idx.numel():
            continue
        print(f"\nPC1 {end} end ({idx.numel()} items, most {'negative' if end == 'low' else 'positive'} first):")
        print(ends_table(pca.coords[:, 0], idx, ckpt.items.raw, titles))
    colour = f"coloured by first {genre} ({len(groups)} groups)" if groups else "one colour"
    print(f"\nwrote {png} ({args.method}, {colour})")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
