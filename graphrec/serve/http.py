"""An HTTP server for recommendations: ``GET /recommend?user=RAW_ID&k=20``, ``/health``,
``/ready`` and ``/info``, on FastAPI and uvicorn (``pip install 'graphrec[serve]'``).

The app talks to a :class:`Service` only: :class:`RunService` serves a trained run folder (the
checkpoint ``python -m graphrec.recommend --run`` loads, scored by
:func:`graphrec.serve.recommend.recommend`), and a pipeline service can answer the same three
methods. Users the run does not know are not an error: they get the most-interacted items,
marked ``"fallback": "popularity"``.

Concurrency: the endpoints are plain ``def`` functions, which FastAPI runs in its threadpool,
and :class:`RunService` holds a lock around the model, so one request at a time scores (torch
and faiss do not promise thread-safe inference on one model and index; each request still uses
torch's and faiss's intra-op threads). ``/health``, ``/ready`` and ``/info`` never wait for it.

fastapi and uvicorn are imported only when an app or server is made, so the library does not
depend on them.
"""

import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from graphrec.errors import GraphrecError

if TYPE_CHECKING:  # torch and the web stack load with a service or an app, not with this module
    import fastapi
    import numpy as np
    import uvicorn

    from graphrec.checkpoint import Checkpoint
    from graphrec.serve.index import IndexConfig

log = logging.getLogger("graphrec.serve")

#: the largest ``k`` one request may ask for
MAX_K = 1000
MISSING = "graphrec serve needs fastapi and uvicorn: pip install 'graphrec[serve]'"


@runtime_checkable
class Service(Protocol):
    """What the HTTP app serves: anything that answers these three methods.

    ``recommend`` returns ``{"user": raw_user, "items": [{"item": raw_id, "score": float,
    "title": str | None}, ...], "fallback": None | "onboarding" | "popularity" | ...}``, best
    item first; it raises :class:`~graphrec.errors.GraphrecError` for bad input (answered as
    HTTP 400). ``items``: a new user's raw item ids (the user need not be known).
    """

    def recommend(self, raw_user: str, k: int, items: list[str] | None = None) -> dict[str, Any]:
        """The top ``k`` items for one raw user id (or a new user's ``items``)."""
        ...

    def ready(self) -> bool:
        """Whether the service can answer ``recommend`` now."""
        ...

    def info(self) -> dict[str, Any]:
        """A description for ``/info``: the model, its numbers of users and items, the index."""
        ...


class RunService:
    """A trained run folder behind the :class:`Service` protocol.

    The checkpoint is loaded once, here; known users are scored by
    :func:`graphrec.serve.recommend.recommend` exactly as the ``recommend`` command scores them
    (seen items excluded, the item index saved in the run folder), unknown users get the
    onboarding list (:func:`graphrec.serve.recommend.onboarding`: the items with the most
    interactions in the checkpoint's seen-items table, diversified by genre or text), scored by
    that count, and a new user who gives items is scored from them
    (:func:`graphrec.serve.recommend.recommend_new`; unknown items dropped with a warning).

    Held for the service's lifetime: the checkpoint, the model's scorer (the graph family's
    propagated embeddings, which ``recommend`` would otherwise recompute per request) and the
    popularity order. An item index is built or loaded once at start and saved in the run
    folder (in a temporary folder when the run folder is read-only) and held.

    Args:
        run_dir: a run folder written by ``graphrec train``, or its ``model.pt``.
        index: ``exact`` (score every item) or an item index kind (``flat``, ``ivf``,
            ``ivfpq``, ``hnsw``); models that are not retrievers are served exactly.
        device: ``cpu``, ``cuda`` or ``auto``.
        index_config: the index's settings (default: those of ``index``).
        include_seen: also recommend the items a user has interacted with.
    """

    def __init__(self, run_dir: str | Path, index: str = "exact", device: str = "cpu",
                 index_config: "IndexConfig | None" = None, include_seen: bool = False) -> None:
        import torch

        from graphrec.checkpoint import load_checkpoint
        from graphrec.models.base import Retriever
        from graphrec.serve.recommend import INDEXES
        from graphrec.utils import resolve_device

        if index not in INDEXES:
            raise GraphrecError(f"--index: unknown index {index!r}; choose one of "
                                f"{', '.join(INDEXES)}")
        start = time.perf_counter()
        self.ckpt: Checkpoint = load_checkpoint(run_dir, resolve_device(device))
        self.ckpt.model.eval()
        self.include_seen = include_seen
        self.index_config = index_config
        self.index_requested = "flat" if index == "faiss" else index
        self.index = self.index_requested
        model = self.ckpt.model
        # The graph family's scorer() propagates over the whole graph (tens of ms at 10^3
        # users, far more at Gowalla's size): the weights never change here, so the service
        # holds one scorer, and one item index, for its lifetime and hands them to recommend().
        held = model.scorer()
        self._scorer = held
        self._item_index = None
        if self.index != "exact" and not isinstance(held, Retriever):
            # recommend() would fall back to exact scoring with a warning on every request
            log.warning("--index %s: model %s does not score by inner products of user and item "
                        "vectors; serving exact scores", index, self.ckpt.model_name)
            self.index = "exact"
        # a dict, not IdMap.to_index per request: that builds a hash of every raw id each call
        self._user_index = {str(raw): i for i, raw in enumerate(self.ckpt.users.raw.tolist())}
        _, seen_items = self.ckpt.seen
        counts = torch.bincount(seen_items.cpu(), minlength=len(self.ckpt.items))
        self._popular = torch.sort(counts, descending=True, stable=True)[1].numpy()
        self._counts = counts.numpy()
        self._lock = threading.Lock()
        self._loaded = False
        self.index_dir = self.ckpt.path.parent if self.ckpt.path else None
        if self.index != "exact" and (self.index_dir is None
                                      or not os.access(self.index_dir, os.W_OK)):
            # recommend() would rebuild, on every request, an index it cannot save: build it
            # once into a folder of this service's own instead
            self._index_tmp = tempfile.TemporaryDirectory(prefix="graphrec-serve-index-")
            self.index_dir = Path(self._index_tmp.name)
        if self.index != "exact":  # built or loaded (and saved) once, before any request
            from graphrec.serve.index import IndexConfig, retriever_index

            cfg = index_config or IndexConfig(kind=self.index)
            self._item_index = retriever_index(held, cfg, self.index_dir)
        # one request's work now, so that a broken model fails at start, not in a request
        self._score(0, 1)
        self._loaded = True
        self.load_seconds = time.perf_counter() - start
        log.info("serving %s: %s, %d users, %d items, index %s (loaded in %.1f s)",
                 self.ckpt.path, self.ckpt.model_name, len(self.ckpt.users),
                 len(self.ckpt.items), self.index, self.load_seconds)

    def ready(self) -> bool:
        """True once the checkpoint is loaded (always, after the constructor returned)."""
        return self._loaded

    def info(self) -> dict[str, Any]:
        """The model's name, numbers of users and items, the index and the run's path."""
        return {"model": self.ckpt.model_name, "users": len(self.ckpt.users),
                "items": len(self.ckpt.items), "index": self.index,
                "index_requested": self.index_requested, "run": str(self.ckpt.path),
                "include_seen": self.include_seen, "fallback": "onboarding",
                "max_k": MAX_K, "titles": self.ckpt.titles is not None}

    def recommend(self, raw_user: str, k: int, items: list[str] | None = None) -> dict[str, Any]:
        """The top ``k`` items for ``raw_user`` or a new user's ``items`` (see :class:`Service`)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise GraphrecError(f"k: must be an integer of at least 1, got {k!r}")
        if items:
            return self._new_user(raw_user, k, items)
        user = self.dense_user(raw_user)
        if user is None:
            from graphrec.serve.recommend import onboarding

            with self._lock:
                top, counts = onboarding(self.ckpt, k)
            return {"user": raw_user, "items": self._rows(top.numpy(), counts.numpy()),
                    "fallback": "onboarding"}
        items, scores = self._score(user, k)
        keep = items >= 0  # a user with fewer than k unseen items gets a shorter list
        return {"user": raw_user, "items": self._rows(items[keep], scores[keep]),
                "fallback": None}

    def dense_user(self, raw_user: str) -> int | None:
        """The dense index of ``raw_user``; ``None`` when the run does not know the user."""
        raw = str(raw_user).strip()
        hit = self._user_index.get(raw)
        if hit is not None or not self.ckpt.users.is_int:
            return hit
        if raw.isascii() and raw.isdigit() and (raw == "0" or not raw.startswith("0")):
            return None  # the canonical spelling of an integer id, and not in the map
        try:  # "007", "7.0", "-3": the id map's own parsing of integer ids
            return int(self.ckpt.users.to_index([raw], "user")[0])
        except GraphrecError:
            return None

    def _new_user(self, raw_user: str, k: int, raw_items: list[str]) -> dict[str, Any]:
        from graphrec.batches import History
        from graphrec.serve.recommend import recommend_new

        index = self.ckpt.items.lookup([str(i).strip() for i in raw_items])
        unknown = [r for r, i in zip(raw_items, index) if i < 0]
        if unknown:
            log.warning("items: dropped %s: not in the run's data", ", ".join(map(repr, unknown)))
        if len(unknown) == len(raw_items):
            raise GraphrecError(f"items: none of the {len(raw_items)} items is in the run's data")
        with self._lock:
            top, scores = recommend_new(self.ckpt, History.from_lists([[int(i) for i in index
                                                                         if i >= 0]]),
                                        k, scorer=self._scorer)
        keep = top[0] >= 0
        return {"user": raw_user, "items": self._rows(top[0][keep].numpy(),
                                                      scores[0][keep].numpy()),
                "fallback": None, "dropped": [str(u) for u in unknown]}

    def _score(self, user: int, k: int) -> "tuple[np.ndarray, np.ndarray]":
        import torch

        from graphrec.serve.recommend import recommend

        with self._lock:
            items, scores = recommend(
                self.ckpt, torch.tensor([user]), k, self.include_seen, index=self.index,
                index_config=self.index_config, index_dir=self.index_dir,
                scorer=self._scorer, item_index=self._item_index)
        return items[0].numpy(), scores[0].numpy()

    def _rows(self, items: "np.ndarray", scores: "np.ndarray") -> list[dict[str, Any]]:
        raw, titles = self.ckpt.items.raw, self.ckpt.titles
        return [{"item": _plain(raw[i]), "score": float(s), "title": titles[i] if titles else None}
                for i, s in zip(items.tolist(), scores, strict=True)]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def require_serving() -> None:
    """A one-line :class:`GraphrecError` when fastapi or uvicorn is not installed."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise GraphrecError(MISSING) from None


def _one_line(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors as one line: ``k: Input should be ... (got 'abc')``."""
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body")]
        got = f" (got {e['input']!r})" if e.get("type") != "missing" and "input" in e else ""
        parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}{got}")
    return "; ".join(parts)


def make_app(service: Service) -> "fastapi.FastAPI":
    """The FastAPI app serving ``service``.

    * ``GET /recommend?user=RAW_ID&k=20``: ``service.recommend(user, k)``; ``k`` from 1 to
      :data:`MAX_K`; ``&items=RAW,RAW``: a new user's items (``user`` may then be left out). Malformed parameters answer 422 with a one-line ``detail`` (and FastAPI's
      ``errors``), a :class:`GraphrecError` from the service 400, a service not ready 503.
    * ``GET /health``: liveness, always ``200 {"status": "ok"}``.
    * ``GET /ready``: readiness, 200 when ``service.ready()``, else 503.
    * ``GET /info``: ``service.info()``.
    """
    require_serving()
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from graphrec import __version__

    app = FastAPI(title="graphrec", version=__version__,
                  description="Top-k recommendations of a trained graphrec model.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse({"detail": _one_line(list(exc.errors())), "errors": errors}, 422)

    # plain def: FastAPI runs these in its threadpool, so a slow model never blocks the loop
    @app.get("/recommend")
    def recommend(user: str = Query("", max_length=1024, description="the user's raw id"),
                  k: int = Query(20, ge=1, le=MAX_K, description="items to return"),
                  items: str | None = Query(None, max_length=65536,
                                            description="a new user's raw item ids, comma "
                                                        "separated")) -> Any:
        if not service.ready():
            return JSONResponse({"detail": "not ready: the model is still loading"}, 503)
        given = [i.strip() for i in items.split(",") if i.strip()] if items else []
        if not user.strip() and not given:
            return JSONResponse({"detail": "user: give user=RAW_ID (or a new user's "
                                           "items=RAW,RAW)"}, 422)
        try:
            return service.recommend(user, k, given) if given else service.recommend(user, k)
        except GraphrecError as e:
            return JSONResponse({"detail": str(e)}, 400)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> Any:
        if service.ready():
            return {"status": "ready"}
        return JSONResponse({"status": "loading"}, 503)

    @app.get("/info")
    def info() -> dict[str, Any]:
        return service.info()

    return app


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000,
                log_level: str = "info") -> "uvicorn.Server":
    """A uvicorn server of :func:`make_app` (not started: ``.run()`` it)."""
    app = make_app(service)
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))


def serve(service: Service, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Serve ``service`` over HTTP on ``host:port`` until interrupted (Ctrl-C, SIGTERM)."""
    make_server(service, host, port, log_level).run()


class ServerThread:
    """The server in a background thread on a port of this machine, for tests, benchmarks and
    notebooks: ``with ServerThread(service) as s: httpx.get(s.url + "/health")``.

    Args:
        service: what to serve.
        host: the address to bind.
        port: the port; 0 picks a free one (``.port`` says which).
        log_level: uvicorn's log level (``warning``: no access log).
        timeout: seconds to wait for the server to start.
    """

    def __init__(self, service: Service, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning", timeout: float = 30.0) -> None:
        self.server = make_server(service, host, port, log_level)
        self.host, self.timeout = host, timeout
        # bound here, so the port is known before uvicorn starts and nobody else takes it;
        # proto IPPROTO_TCP, or asyncio leaves Nagle on (40 ms per keep-alive response)
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                   socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="graphrec-http", daemon=True)

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the HTTP server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(self.timeout)
        self._sock.close()


__all__ = ["MAX_K", "RunService", "Service", "ServerThread", "make_app", "make_server",
           "require_serving", "serve"]
