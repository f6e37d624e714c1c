"""Modules that are also functions: ``gr.train(...)`` and ``gr.split(...)``.

``graphrec.train`` is the command line's module (``python -m graphrec.train``) and
``graphrec.split`` the library's splitting module; Python binds a submodule to its package's
attribute when it is imported, so ``graphrec.train`` cannot stay a plain function. The module
is made callable instead: calling it calls the Python API's function of the same name
(:func:`graphrec.api.train`, :func:`graphrec.api.split`).
"""

from __future__ import annotations

import sys
import types
from typing import Any


class CallableModule(types.ModuleType):
    """A module whose call is ``graphrec.api.<its last name>``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from graphrec import api

        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Let module ``module_name`` be called as its API function (not when it runs as
    ``__main__``, where nothing calls it)."""
    if module_name != "__main__":
        sys.modules[module_name].__class__ = CallableModule
