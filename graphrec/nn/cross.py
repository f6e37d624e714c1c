"""Cross layers of the Deep & Cross Networks: explicit, bounded-degree feature crosses.

Every layer maps ``(x_0, x_l) -> x_{l+1}`` over the last dimension of tensors of any leading
shape ``[..., dim]``; ``x_0`` is the network's input, fixed across the layers, so layer ``l``
builds crosses of degree up to ``l + 1`` of the input features.

* :class:`CrossLayer`: DCN (Wang, Fu, Fu and Wang, ADKDD 2017, eq. 3),
  ``x_{l+1} = x_0 x_l^T w_l + b_l + x_l`` with vectors ``w_l, b_l`` of size ``dim``: the
  scalar ``x_l^T w_l`` of each example scales ``x_0``, and the bias is added after the scaling,
  as in the paper (``O(dim)`` parameters per layer).
* :class:`CrossLayerV2`: DCN-V2 (Wang et al., WWW 2021, eq. 1),
  ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l`` with a full-rank ``W_l`` (``dim × dim``) or the
  low-rank ``W_l = U_l V_l^T`` (``U_l, V_l``: ``dim × rank``; the paper's eq. 2 without the
  mixture of experts), computed as ``U_l (V_l^T x_l)``, never forming ``W_l``.
* :class:`CrossNetwork`: ``num_layers`` of either kind stacked, ``x_0 -> x_L``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graphrec.errors import GraphrecError

#: the cross network versions :class:`CrossNetwork` takes
CROSS_VERSIONS = (1, 2)


def _check_dim(dim: int) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise GraphrecError(f"cross layer: dim must be a positive integer, got {dim!r}")


class CrossLayer(nn.Module):
    r"""One DCN (v1) cross layer: :math:`x_{l+1} = x_0 \, (x_l^\top w_l) + b_l + x_l`.

    Args:
        dim: size of ``x_0`` and ``x_l`` (their last dimension).

    Parameters: ``weight [dim]`` (``w_l``, uniform in ``±1/sqrt(dim)``), ``bias [dim]``
    (``b_l``, zeros).

    Shapes: ``x0, x [..., dim] -> [..., dim]``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        _check_dim(dim)
        self.dim = dim
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        """``x_{l+1}`` of the network input ``x0`` and this layer's input ``x``."""
        s = (x @ self.weight).unsqueeze(-1)  # [..., 1]: x_l^T w_l, one scalar per example
        return x0 * s + self.bias + x

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class CrossLayerV2(nn.Module):
    r"""One DCN-V2 cross layer: :math:`x_{l+1} = x_0 \odot (W_l x_l + b_l) + x_l`.

    Args:
        dim: size of ``x_0`` and ``x_l``.
        rank: ``None`` for a full-rank ``W_l`` (parameter ``weight [dim, dim]``, ``W_l x`` is
            ``weight @ x``); an integer ``r >= 1`` for ``W_l = U_l V_l^T`` (parameters
            ``u [dim, r]`` and ``v [dim, r]``). ``r >= dim`` is allowed: ``U V^T`` is then any
            ``dim × dim`` matrix, as with full rank, with more parameters and no saving.

    Parameters are initialized as :class:`torch.nn.Linear` initializes its weight (uniform in
    ``±1/sqrt(fan_in)``); ``bias [dim]`` starts at zeros.

    Shapes: ``x0, x [..., dim] -> [..., dim]``.
    """

    def __init__(self, dim: int, rank: int | None = None) -> None:
        super().__init__()
        _check_dim(dim)
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise GraphrecError(f"cross layer: rank must be a positive integer or None (full "
                                f"rank), got {rank!r}")
        self.dim, self.rank = dim, rank
        if rank is None:
            bound = 1.0 / math.sqrt(dim)
            self.weight = nn.Parameter(torch.empty(dim, dim).uniform_(-bound, bound))
        else:
            self.u = nn.Parameter(torch.empty(dim, rank).uniform_(-1 / math.sqrt(rank), 1 / math.sqrt(rank)))
            self.v = nn.Parameter(torch.empty(dim, rank).uniform_(-1 / math.sqrt(dim), 1 / math.sqrt(dim)))
        self.bias = nn.Parameter(torch.zeros(dim))

    def matrix(self) -> Tensor:
        """``W_l [dim, dim]`` (formed from ``U V^T`` for a low-rank layer; for tests and study)."""
        return self.weight if self.rank is None else self.u @ self.v.T

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        """``x_{l+1}`` of the network input ``x0`` and this layer's input ``x``."""
        if self.rank is None:
            wx = x @ self.weight.T  # [..., dim]: W x for each example
        else:
            wx = (x @ self.v) @ self.u.T  # [..., rank] -> [..., dim]: U (V^T x)
        return x0 * (wx + self.bias) + x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank if self.rank is not None else 'full'}"


class CrossNetwork(nn.Module):
    """``num_layers`` cross layers, ``x_0 -> x_1 -> ... -> x_L``, each layer reading ``x_0``.

    Args:
        dim: size of the input ``x_0``.
        num_layers: number of layers ``L >= 1``.
        version: ``1`` (:class:`CrossLayer`, DCN) or ``2`` (:class:`CrossLayerV2`, DCN-V2).
        rank: for version 2, ``None`` (full rank) or the rank of every layer's ``W``; version 1
            takes none (its weight is a vector).

    Shapes: ``x0 [..., dim] -> [..., dim]``.
    """

    def __init__(self, dim: int, num_layers: int, version: int = 2, rank: int | None = None) -> None:
        super().__init__()
        if version not in CROSS_VERSIONS or isinstance(version, bool):
            raise GraphrecError(f"cross network: version must be 1 or 2, got {version!r}")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise GraphrecError(f"cross network: num_layers must be a positive integer, got {num_layers!r}")
        if version == 1 and rank is not None:
            raise GraphrecError("cross network: rank applies to version 2 only (a DCN v1 "
                                "layer's weight is a vector)")
        self.version = version
        self.layers = nn.ModuleList(CrossLayer(dim) if version == 1 else CrossLayerV2(dim, rank)
                                    for _ in range(num_layers))

    def forward(self, x0: Tensor) -> Tensor:
        """``x_L`` of the input ``x0``."""
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


__all__ = ["CROSS_VERSIONS", "CrossLayer", "CrossLayerV2", "CrossNetwork"]
