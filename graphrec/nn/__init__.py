"""Neural building blocks shared by the models: graph propagation over the user-item graph."""

from graphrec.nn.propagation import (LightGCNEncoder, SymmetricLGConv, normalized_adjacency,
                                     symmetric_spmm)

__all__ = ["LightGCNEncoder", "SymmetricLGConv", "normalized_adjacency", "symmetric_spmm"]
