"""The one schema every graphrec graph follows, named in one place.

A data set is a bipartite :class:`torch_geometric.data.HeteroData` graph:

* node types ``user`` and ``item``, dense 0-based indices, no padding row;
* edge type ``('user', 'interacts', 'item')`` with ``edge_index`` sorted by (user, time) and the
  optional float32 ``rating`` and int64 ``time`` (seconds) attributes, plus an int8 ``part``
  attribute when the source came with a predefined train/test division;
* the reverse edge type ``('item', 'rev_interacts', 'user')``, named as PyG's ``ToUndirected``
  names it.

The graph carries no derived state (no pointer arrays, no cached sequences), so PyG's own
transforms (``subgraph``, ``RandomLinkSplit``, batching, ``to_homogeneous``) cannot leave it
inconsistent. Each user's time-ordered items are read from the edges when needed:
:func:`graphrec.data.graph.user_sequences`.

Raw ids live only in the id maps (``graph.user_ids`` / ``graph.item_ids`` via :mod:`graphrec.data`).
"""

from __future__ import annotations

USER = "user"
ITEM = "item"
EDGE = (USER, "interacts", ITEM)
REV_EDGE = (ITEM, "rev_interacts", USER)
#: item-item content-similarity edges (``edge_weight``: the cosine), symmetric: each edge is
#: stored in both directions (:func:`graphrec.models.content_knn.add_similar_edges`)
SIMILAR = (ITEM, "similar", ITEM)

RATING = "rating"
TIME = "time"
PART = "part"

# Values of the ``part`` edge attribute for predefined divisions (the LightGCN train/test pair).
PART_TRAIN = 0
PART_VALID = 1
PART_TEST = 2

# Attribute names that side features may not take, because the schema already uses them.
RESERVED_NODE_ATTRS = frozenset({"num_nodes", "x", "node_id", "n_id"})
