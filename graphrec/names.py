"""The names the command line offers, kept free of heavy imports so that ``--help`` and argument
errors answer without loading torch: model names, input formats, split methods, index kinds and
duplicate policies. The modules that implement them import these tuples from here."""

from __future__ import annotations

#: registered model names, in the order ``--help`` lists them (``graphrec.models.REGISTRY``)
MODEL_NAMES = ("pop", "random", "graph-filter", "lightgcn", "bpr", "mf", "ncf", "mlp-rating",
               "sasrec", "bert4rec", "two-tower", "content-knn",
               "hybrid",
               # neighbourhood and linear baselines
               "itemknn", "userknn", "ease", "slim", "ials",
               # explicit-rating baselines (Surprise's) and GC-MC
               "baseline-only", "svd", "svdpp", "nmf", "knn-baseline", "gcmc",
               # graph filters past GF-CF
               "bspm", "turbo-cf", "poly-filter")
#: other names accepted for a model
MODEL_ALIASES = {"gfcf": "graph-filter"}
#: ``--format`` values (``graphrec.data.readers``)
FORMATS = ("ml-100k", "ml-dat", "csv", "tsv", "parquet", "atomic", "lightgcn", "pyg")
#: ``--dedup`` values: which of duplicate (user, item) interactions to keep
DEDUP_POLICIES = ("last", "first")
#: ``--split`` values (``graphrec.split``)
SPLIT_METHODS = ("random", "temporal", "time-cut", "leave-one-out", "given", "cold-items",
                 "cold-users")
#: ``--index`` values (``graphrec.serve.index``)
INDEX_KINDS = ("exact", "flat", "ivf", "ivfpq", "hnsw")
#: ``--unseen-test`` values: a held-out row whose user or item is not in training
UNSEEN_POLICIES = ("error", "drop")
#: ``--overlap`` values: a held-out (user, item) pair that is also a training pair
OVERLAP_POLICIES = ("error", "drop-from-test")
