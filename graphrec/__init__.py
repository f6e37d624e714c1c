"""graphrec: a graph-first recommender library on PyTorch Geometric.

``import graphrec as gr`` gives the Python API (:mod:`graphrec.api`): ``gr.load``,
``gr.from_pandas``, ``gr.split``, ``gr.train``, ``gr.evaluate``, ``gr.save``, ``gr.load_model``.
They load on first use, so that importing the package (and every ``--help``) stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("Model", "Parts", "evaluate", "from_pandas", "load", "load_model", "save", "split",
        "train")


def __getattr__(name: str) -> Any:
    if name in ("train", "split"):  # modules that, called, are the API functions
        import importlib

        return importlib.import_module(f"graphrec.{name}")
    if name in _API:
        from graphrec import api

        return getattr(api, name)
    raise AttributeError(f"module 'graphrec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
