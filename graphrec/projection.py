"""Two-dimensional maps of item vectors: PCA (always available), t-SNE and UMAP (optional).

PCA here is the textbook one: centre the vectors, take the top two right singular vectors of
the centred matrix (``torch.linalg.svd``) as the axes, and project onto them. Singular vectors
are defined only up to sign, so the sign is fixed by a convention that does not depend on the
SVD routine: **each axis is flipped so that its largest-magnitude loading (the first one, on a
tie) is positive**. This is the convention of scikit-learn's ``PCA`` since 1.5
(``svd_flip(u_based_decision=False)``), so ``pca_2d(x).components`` equals
``PCA(2).fit(x).components_`` there.

t-SNE (van der Maaten & Hinton, 2008) needs scikit-learn, UMAP (McInnes et al., 2018) needs
umap-learn; without the package the call is a one-line :class:`GraphrecError` naming it. Both
are seeded, so a map is reproducible on one machine and library version.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from graphrec.errors import GraphrecError

#: the projections :func:`project_2d` knows
METHODS = ("pca", "tsne", "umap")
#: the package each optional method needs: (import name, pip name)
OPTIONAL = {"tsne": ("sklearn", "scikit-learn"), "umap": ("umap", "umap-learn")}


class PCA2D(NamedTuple):
    """The result of :func:`pca_2d` (unpacks as ``coords, components, explained``).

    Attributes:
        coords: ``[N, 2]`` float64, the centred vectors projected on the two axes.
        components: ``[2, F]`` float64, the axes (unit rows, sign convention of the module).
        explained: ``[2]`` float64, the fraction of the total variance along each axis.
        mean: ``[F]`` float64, the mean vector that was subtracted.
    """

    coords: Tensor
    components: Tensor
    explained: Tensor
    mean: Tensor


def _checked(vectors: Tensor, what: str) -> Tensor:
    """``vectors`` as a float64 CPU matrix ``[N, F]`` with N >= 2, F >= 2, finite values."""
    if not isinstance(vectors, Tensor) or vectors.dim() != 2:
        shape = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
        raise GraphrecError(f"{what}: expected a matrix [num_items, dim], got {shape}")
    n, f = vectors.shape
    if n < 2 or f < 2:
        raise GraphrecError(f"{what}: a 2-D map needs at least 2 items and 2 dimensions, "
                            f"got [{n}, {f}]")
    x = vectors.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise GraphrecError(f"{what}: the vectors have non-finite values")
    return x


def sign_convention(components: Tensor) -> Tensor:
    """``components [k, F]`` with each row flipped so that its largest-magnitude entry (the
    first such entry, on a tie) is positive."""
    lead = components.abs().argmax(dim=1, keepdim=True)  # argmax: first maximum
    signs = torch.sign(components.gather(1, lead))
    signs[signs == 0] = 1.0
    return components * signs


def pca_2d(vectors: Tensor, what: str = "item vectors") -> PCA2D:
    """The first two principal axes of ``vectors [N, F]`` and the vectors projected on them.

    ``X_c = X - mean(X)``, ``X_c = U S V^T`` (``torch.linalg.svd``, reduced), axes = the first two
    rows of ``V^T`` after :func:`sign_convention`, ``coords = X_c @ axes^T``, explained variance
    ratio ``s_k^2 / sum_j s_j^2``. Computed in float64.

    Args:
        vectors: ``[N, F]`` with ``N >= 2`` items and ``F >= 2`` dimensions, finite.
        what: what the vectors are, for the error messages.

    Returns:
        :class:`PCA2D` ``(coords [N, 2], components [2, F], explained [2], mean [F])``.
    """
    x = _checked(vectors, what)
    mean = x.mean(dim=0)
    centred = x - mean
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)  # s descending
    total = float((s * s).sum())
    if total <= 0.0:
        raise GraphrecError(f"{what}: all {x.size(0)} vectors are the same; nothing to map")
    components = sign_convention(vh[:2])
    coords = centred @ components.T
    explained = (s[:2] * s[:2]) / total
    return PCA2D(coords, components, explained, mean)


def require(method: str) -> None:
    """A one-line error unless the package ``method`` needs imports."""
    if method not in METHODS:
        raise GraphrecError(f"--method: unknown method {method!r}; choose one of "
                            f"{', '.join(METHODS)}")
    if method in OPTIONAL:
        module, package = OPTIONAL[method]
        try:
            __import__(module)
        except ImportError:
            raise GraphrecError(f"--method {method}: needs {package}, which is not installed "
                                f"(pip install {package}), or use --method pca") from None


def project_2d(vectors: Tensor, method: str = "pca", seed: int = 0,
               what: str = "item vectors") -> Tensor:
    """``vectors [N, F]`` mapped to ``[N, 2]`` float64 by ``method``.

    * ``pca``: :func:`pca_2d`'s coordinates.
    * ``tsne``: scikit-learn's ``TSNE`` (PCA initialisation, perplexity ``min(30, (N - 1) / 3)``).
    * ``umap``: umap-learn's ``UMAP`` (``n_neighbors = min(15, N - 1)``).

    ``seed`` seeds t-SNE and UMAP. A missing optional package is a one-line error.
    """
    require(method)
    if method == "pca":
        return pca_2d(vectors, what).coords
    x = _checked(vectors, what).numpy()
    n = x.shape[0]
    if method == "tsne":
        from sklearn.manifold import TSNE

        if n < 4:
            raise GraphrecError(f"--method tsne: needs at least 4 items, got {n}")
        tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca",
                    random_state=seed)
        out = tsne.fit_transform(x)
    else:
        import umap

        if n < 3:
            raise GraphrecError(f"--method umap: needs at least 3 items, got {n}")
        out = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed).fit_transform(x)
    return torch.as_tensor(out, dtype=torch.float64)


def extremes(values: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The indices of the ``n`` smallest values (smallest first) and of the ``n`` largest
    (largest first) of ``values [N]``; ties keep index order. ``n`` is capped at ``N // 2`` so
    the two ends never share an item."""
    n = max(0, min(int(n), values.numel() // 2))
    low = torch.argsort(values, stable=True)[:n]
    high = torch.argsort(values, descending=True, stable=True)[:n]
    return low, high


__all__ = ["METHODS", "PCA2D", "pca_2d", "sign_convention", "project_2d", "require", "extremes"]
