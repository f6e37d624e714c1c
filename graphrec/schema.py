"""The one schema every graphrec graph follows, named in one place.

A data set is a bipartite :class:`torch_geometric.data.HeteroData` graph:

* node types ``user`` and ``item``, dense 0-based indices, no padding row;
* edge type ``('user', 'interacts', 'item')`` with ``edge_index`` sorted by (user, time) and the
  optional float32 ``rating`` and int64 ``time`` (seconds) attributes, plus an int8 ``part``
  attribute when the source came with a predefined train/test division;
* the reverse edge type ``('item', 'rev_interacts', 'user')``, named as PyG's ``ToUndirected``
  names it;
* on the ``user`` store, each user's time-ordered items in CSR form: ``seq_ptr`` (num_users + 1)
  and ``seq_item`` (num_interactions).

Raw ids live only in the id maps (``graph.user_ids`` / ``graph.item_ids`` via :mod:`graphrec.data`).
"""

from __future__ import annotations

USER = "user"
ITEM = "item"
EDGE = (USER, "interacts", ITEM)
REV_EDGE = (ITEM, "rev_interacts", USER)

RATING = "rating"
TIME = "time"
PART = "part"
SEQ_PTR = "seq_ptr"
SEQ_ITEM = "seq_item"

# Values of the ``part`` edge attribute for predefined divisions (the LightGCN train/test pair).
PART_TRAIN = 0
PART_VALID = 1
PART_TEST = 2

# Attribute names that side features may not take, because the schema already uses them.
RESERVED_NODE_ATTRS = frozenset({"num_nodes", "x", SEQ_PTR, SEQ_ITEM, "node_id", "n_id"})
