"""``python -m graphrec.serve --run RUN_DIR [--index hnsw] [--host 127.0.0.1] [--port 8000]``:
serve a trained run over HTTP (:mod:`graphrec.serve.http`: ``GET /recommend?user=RAW_ID&k=20``,
``/health``, ``/ready``, ``/info``).

The run's checkpoint is loaded (and its item index built or loaded) before the port is bound,
so a bad ``--run`` or ``--index`` is a one-line error, not a server that answers errors.
Needs fastapi and uvicorn (``pip install 'graphrec[serve]'``).
"""

from __future__ import annotations

import argparse
import sys

from graphrec.cli import Parser, add_index_set_argument, run
from graphrec.errors import GraphrecError
from graphrec.names import INDEX_KINDS


def parser(prog: str = "python -m graphrec.serve") -> argparse.ArgumentParser:
    """The command's arguments (no heavy imports: the model loads in :func:`main`)."""
    p = Parser(prog=prog, description="Serve recommendations of a trained run over HTTP.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="run folder written by graphrec.train (or its model.pt)")
    what.add_argument("--pipeline", metavar="PIPELINE.toml", help="a pipeline configuration")
    p.add_argument("--index", choices=INDEX_KINDS + ("faiss",), default="exact",
                   help="exact: score every item with the model (default); flat, ivf, ivfpq, "
                        "hnsw: search an item index of a retriever's vectors (saved in the run "
                        "folder); others score exactly")
    add_index_set_argument(p)
    p.add_argument("--include-seen", action="store_true", help="also recommend seen items")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug", "trace"),
                   help="uvicorn's log level (default info: one access-log line per request)")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m graphrec.serve") -> int:
    """The command: load the run (or pipeline), then serve it until interrupted."""
    args = parser(prog).parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise GraphrecError(f"--port: must be from 0 to 65535, got {args.port}")
    from graphrec.serve.http import require_serving, serve

    require_serving()  # before minutes of loading, not after
    if args.pipeline:
        try:
            from graphrec.serve.pipeline import PipelineService  # type: ignore[attr-defined]
        except ImportError as e:  # the module or its service not there yet; not its own imports
            if e.name != "graphrec.serve.pipeline":
                raise
            raise GraphrecError("pipelines are served once graphrec.pipeline lands") from None
        service = PipelineService.from_config(args.pipeline)
    else:
        from graphrec.serve.http import RunService
        from graphrec.serve.index import parse_index_options

        kind = "flat" if args.index == "faiss" else args.index
        if args.index_set and kind == "exact":
            raise GraphrecError("--index-set: needs --index flat, ivf, ivfpq or hnsw")
        cfg = parse_index_options(kind, args.index_set) if kind != "exact" else None
        service = RunService(args.run, kind, args.device, cfg, args.include_seen)
    info = service.info()
    print(f"serving {info.get('model', 'a pipeline')} ({info.get('users', '?')} users, "
          f"{info.get('items', '?')} items, index {info.get('index', '?')}) on "
          f"http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    serve(service, args.host, args.port, args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
