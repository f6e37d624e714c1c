"""``graphrec plot embeddings``: PCA against a numpy reference, the PNG, the printed ends of the
first principal axis, genre colours, and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graphrec import plot, train
from graphrec.checkpoint import load_checkpoint
from graphrec.cli import main as graphrec_main
from graphrec.cli import run
from graphrec.errors import GraphrecError
from graphrec.projection import extremes, pca_2d, project_2d, sign_convention

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny.csv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUM_USERS, NUM_ITEMS, GENRES = 30, 40, ["Action", "Comedy", "Drama", "Horror"]


def reference_pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy's SVD of the centred matrix, each axis signed so its largest |loading| is > 0."""
    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2].copy()
    for row in axes:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return centred @ axes.T, axes, (s[:2] ** 2) / (s ** 2).sum()


# --------------------------------------------------------------------------------------------
# The projection math


def test_pca_equals_numpy_svd_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(57, 9, generator=g) * torch.linspace(3.0, 0.2, 9) + 5.0  # off-centre
    coords, components, explained, mean = pca_2d(x.float())
    ref_coords, ref_axes, ref_explained = reference_pca(x.float().numpy())
    np.testing.assert_allclose(components.numpy(), ref_axes, atol=1e-10)
    np.testing.assert_allclose(coords.numpy(), ref_coords, atol=1e-9)
    np.testing.assert_allclose(explained.numpy(), ref_explained, atol=1e-12)
    np.testing.assert_allclose(mean.numpy(), x.double().mean(0).numpy(), atol=1e-12)
    assert coords.shape == (57, 2) and components.shape == (2, 9) and explained.shape == (2,)
    assert float(explained[0]) > float(explained[1]) > 0.0
    torch.testing.assert_close(components @ components.T, torch.eye(2, dtype=torch.float64))


def test_pca_sign_convention_is_deterministic():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 5, generator=g) * torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1])
    a, b = pca_2d(x), pca_2d(-x)  # the same axes whatever sign the SVD returns
    for row in a.components:
        assert float(row[row.abs().argmax()]) > 0
    torch.testing.assert_close(a.components, b.components)
    torch.testing.assert_close(a.coords, -b.coords)
    flipped = sign_convention(torch.tensor([[0.1, -0.9, 0.3], [-0.5, 0.5, 0.2]], dtype=torch.float64))
    assert flipped.tolist() == [[-0.1, 0.9, -0.3], [0.5, -0.5, -0.2]]  # a tie: the first wins


def test_pca_equals_sklearn_up_to_sign():
    decomposition = pytest.importorskip("sklearn.decomposition")
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(80, 12, generator=g) @ torch.randn(12, 12, generator=g)).double()
    ours = pca_2d(x)
    ref = decomposition.PCA(n_components=2, svd_solver="full").fit(x.numpy())
    signs = np.sign((ours.components.numpy() * ref.components_).sum(1))  # +1 or -1 per axis
    np.testing.assert_allclose(ours.components.numpy(), signs[:, None] * ref.components_, atol=1e-9)
    np.testing.assert_allclose(ours.coords.numpy(), signs * ref.transform(x.numpy()), atol=1e-8)
    np.testing.assert_allclose(ours.explained.numpy(), ref.explained_variance_ratio_, atol=1e-12)


@pytest.mark.parametrize("vectors, message", [
    (torch.ones(1, 4), "at least 2 items and 2 dimensions"),
    (torch.ones(5, 1), "at least 2 items and 2 dimensions"),
    (torch.ones(5, 3), "all 5 vectors are the same"),
    (torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]), "non-finite"),
    (torch.ones(3), "expected a matrix"),
])
def test_degenerate_vectors_are_one_line_errors(vectors, message):
    with pytest.raises(GraphrecError, match=message) as e:
        pca_2d(vectors)
    assert "\n" not in str(e.value)


def test_extremes_are_the_smallest_and_largest():
    values = torch.tensor([0.5, -2.0, 3.0, 0.0, -1.0, 3.0, 1.0])
    low, high = extremes(values, 2)
    assert low.tolist() == [1, 4] and high.tolist() == [2, 5]  # ties in index order
    low, high = extremes(values, 100)  # capped at N // 2: the ends never overlap
    assert len(low) == len(high) == 3 and not set(low.tolist()) & set(high.tolist())


def test_primary_genre_is_the_first_set_column():
    multi = torch.tensor([[0, 1, 1], [1, 0, 1], [0, 0, 0], [0, 0, 1.0]])
    assert plot.primary_genres(multi).tolist() == [1, 0, -1, 2]
    assert plot.genre_feature({"movie_title": {"type": "text"},
                               "tags": {"type": "multi_hot", "vocab": ["a"]},
                               "class": {"type": "multi_hot", "vocab": ["b"]}}) == "class"
    assert plot.genre_feature({"colours": {"type": "multi_hot", "vocab": ["a"]}}) == "colours"
    assert plot.genre_feature({"year": {"type": "token", "vocab": [""]}}) is None


def test_missing_optional_package_is_one_line(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "umap", None)  # import umap fails
    with pytest.raises(GraphrecError, match=r"--method umap: needs umap-learn.*\(pip install umap-learn\)"):
        project_2d(torch.randn(10, 3), "umap")


# --------------------------------------------------------------------------------------------
# The command on tiny trained runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """bpr trained 2 epochs on a graph with titles, a multi-hot genre and text_emb (integer item
    ids that are not indices), and pop and bpr on data/tiny.csv (no item features)."""
    from graphrec.data.graph import build, save
    from graphrec.data.readers import read

    folder = tmp_path_factory.mktemp("plot")
    g = torch.Generator().manual_seed(5)
    rows = [(f"u{u:02d}", 100 + 3 * i, 4, t) for u in range(NUM_USERS)
            for t, i in enumerate(torch.randperm(NUM_ITEMS, generator=g)[:8].tolist())]
    csv = folder / "interactions.csv"
    pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).to_csv(csv, index=False)
    ds = build(read(csv))
    genres = torch.zeros(ds.num_items, len(GENRES))
    genres[torch.arange(ds.num_items), torch.arange(ds.num_items) % len(GENRES)] = 1.0
    genres[::5, -1] = 1.0  # some items have two genres: the first one colours them
    genres[7] = 0.0  # and one has none
    ds.graph["item"].movie_title = [f"Movie {raw}" for raw in ds.items.raw]
    ds.graph["item"]["class"] = genres
    ds.graph["item"].text_emb = torch.randn(ds.num_items, 384, generator=g)
    ds.meta["features"] = {"item": {"movie_title": {"type": "text"},
                                    "class": {"type": "multi_hot", "vocab": GENRES}}}
    graph = folder / "graph.pt"
    save(ds, graph)
    out = {}
    for name, model, data in (("bpr", "bpr", graph), ("pop", "pop", TINY), ("plain", "bpr", TINY)):
        out[name] = folder / name
        assert run(train.main, ["--model", model, "--data", str(data), "--out", str(out[name]),
                                "--epochs", "2", "--no-progress", "--test-ratio", "0.25"]) == 0
    return out


def printed_ends(stdout: str) -> dict[str, list[tuple[float, str, str]]]:
    """``{"low": [(pc1, item, title), ...], "high": [...]}`` from the command's output."""
    ends: dict[str, list[tuple[float, str, str]]] = {}
    current = None
    for line in stdout.splitlines():
        m = re.match(r"PC1 (low|high) end", line)
        if m:
            current = ends.setdefault(m.group(1), [])
            continue
        m = re.match(r"\s*([+-]\d+\.\d+)\s+(\S+)(?:\s\s(.*))?$", line)
        if m and current is not None:
            current.append((float(m.group(1)), m.group(2), m.group(3) or ""))
        elif not line.strip():
            current = None
    return ends


def expected_ends(vectors: torch.Tensor, raw_ids, n: int) -> tuple[list[str], list[str], np.ndarray]:
    coords, _, explained = reference_pca(vectors.numpy())
    order = np.argsort(coords[:, 0], kind="stable")
    return ([str(raw_ids[i]) for i in order[:n]], [str(raw_ids[i]) for i in order[::-1][:n]],
            explained)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5_000
    assert not list(path.parent.glob(".*.tmp"))  # written through a temp file and a rename


def test_learned_pca_writes_the_png_and_prints_the_extreme_items(runs, capsys):
    pytest.importorskip("matplotlib")
    assert run(plot.main, ["embeddings", "--run", str(runs["bpr"]), "--top", "4"]) == 0
    stdout = capsys.readouterr().out
    assert_png(runs["bpr"] / "embeddings_learned_pca.png")
    ckpt = load_checkpoint(runs["bpr"])
    vectors = ckpt.model.scorer().item_vectors().detach()
    low, high, explained = expected_ends(vectors, ckpt.items.raw, 4)
    ends = printed_ends(stdout)
    assert [item for _, item, _ in ends["low"]] == low
    assert [item for _, item, _ in ends["high"]] == high
    assert all(title == f"Movie {item}" for _, item, title in ends["low"] + ends["high"])
    assert [p for p, _, _ in ends["low"]] == sorted(p for p, _, _ in ends["low"])
    assert f"PC1 {explained[0]:.4f}, PC2 {explained[1]:.4f}" in stdout
    assert f"{NUM_ITEMS} items x {vectors.size(1)} dimensions" in stdout
    # coloured by the first genre; legend groups: four genres and 'none'
    assert "coloured by first class (5 groups)" in stdout


def test_text_source_through_the_graphrec_dispatcher(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "text.png"
    assert graphrec_main(["plot", "embeddings", "--run", str(runs["bpr"]), "--source", "text",
                          "--out", str(png), "--top", "3"]) == 0
    stdout = capsys.readouterr().out
    assert_png(png)
    from graphrec.data.graph import load
    ds = load(runs["bpr"].parent / "graph.pt")
    low, high, _ = expected_ends(ds.graph["item"].text_emb, ds.items.raw, 3)
    ends = printed_ends(stdout)
    assert [i for _, i, _ in ends["low"]] == low and [i for _, i, _ in ends["high"]] == high
    assert "384 dimensions" in stdout


def test_tsne_map_and_raw_ids_without_titles_or_genres(runs, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    threadpoolctl = pytest.importorskip("threadpoolctl")  # a dependency of scikit-learn
    # one OpenMP thread: on a busy machine, spinning threads make a 10-point t-SNE take seconds
    with threadpoolctl.threadpool_limits(1):
        assert run(plot.main, ["embeddings", "--run", str(runs["plain"]), "--method", "tsne"]) == 0
    stdout = capsys.readouterr().out
    assert_png(runs["plain"] / "embeddings_learned_tsne.png")
    assert "one colour" in stdout and "title" not in stdout
    ckpt = load_checkpoint(runs["plain"])
    n = min(10, len(ckpt.items) // 2)
    low, high, _ = expected_ends(ckpt.model.scorer().item_vectors().detach(), ckpt.items.raw, n)
    ends = printed_ends(stdout)  # the ends of PC1 whatever the map's method
    assert [i for _, i, _ in ends["low"]] == low and [i for _, i, _ in ends["high"]] == high


def one_line_error(argv, capsys) -> str:
    assert run(plot.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_errors_are_one_line(runs, tmp_path, capsys, monkeypatch):
    err = one_line_error(["embeddings", "--run", str(runs["pop"])], capsys)
    assert "model pop has no item vectors" in err and "--source learned" in err
    err = one_line_error(["embeddings", "--run", str(runs["plain"]), "--source", "text"], capsys)
    assert "no item attribute text_emb" in err and "--text-cols" in err
    err = one_line_error(["embeddings", "--run", str(runs["bpr"]), "--out", "x.jpg"], capsys)
    assert "--out" in err and ".png" in err
    err = one_line_error(["embeddings", "--run", str(tmp_path / "nowhere")], capsys)
    assert "no such checkpoint" in err
    err = one_line_error(["embeddings", "--run", str(runs["bpr"]), "--source", "text",
                          "--data", str(TINY)], capsys)
    assert "other items than the run" in err
    monkeypatch.setitem(__import__("sys").modules, "umap", None)
    err = one_line_error(["embeddings", "--run", str(runs["bpr"]), "--method", "umap"], capsys)
    assert "umap-learn" in err and "pip install umap-learn" in err
    assert not (runs["bpr"] / "embeddings_learned_umap.png").exists()
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    err = one_line_error(["embeddings", "--run", str(runs["bpr"])], capsys)
    assert "matplotlib" in err
