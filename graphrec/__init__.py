"""graphrec: a graph-first recommender library on PyTorch Geometric."""

__version__ = "0.1.0"
