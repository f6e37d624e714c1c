"""Neural building blocks shared by the models: graph propagation over the user-item graph."""

from graphrec.nn.propagation import (BACKENDS, DEFAULT_BACKEND, BlockedAdjacency, LightGCNConv,
                                     LightGCNEncoder, blocked_adjacency, lightgcn_adjacency,
                                     normalized_adjacency, spmm, symmetric_spmm)

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "BlockedAdjacency", "LightGCNConv", "LightGCNEncoder",
           "blocked_adjacency", "lightgcn_adjacency", "normalized_adjacency", "spmm",
           "symmetric_spmm"]
