"""``python -m graphrec.pipeline --config pipeline.toml``: retrieval -> ranking -> re-ranking.

``--fit`` trains the ranker of the file's ``[ranker]`` table by the leak-free protocol of
:mod:`graphrec.serve.pipeline` and writes it into its run folder; ``--evaluate`` prints the
stage-by-stage metrics on the test part (and ``--out FILE`` writes them as JSON); without
``--fit``, ``--evaluate`` is implied. ``python -m graphrec.recommend --pipeline FILE --user
RAW_ID`` gives users' final lists, ``python -m graphrec.serve --pipeline FILE`` serves them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphrec.cli import Parser, format_table, run
from graphrec.errors import GraphrecError


def parser(prog: str = "python -m graphrec.pipeline") -> argparse.ArgumentParser:
    """The command's arguments (no heavy imports)."""
    p = Parser(prog=prog, description="Run, fit and evaluate a multi-stage pipeline.")
    p.add_argument("--config", required=True, help="the pipeline's TOML file")
    p.add_argument("--fit", action="store_true", help="train the ranker (leak-free protocol)")
    p.add_argument("--evaluate", action="store_true", help="stage-by-stage test metrics")
    p.add_argument("--out", default=None, help="write the --evaluate metrics to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m graphrec.pipeline") -> int:
    """The command."""
    args = parser(prog).parse_args(argv)
    from graphrec.serve.pipeline import Pipeline, read_config
    from graphrec.utils import atomic_write_json

    cfg = read_config(args.config)
    pipe = Pipeline(cfg, progress=not args.no_progress, load_ranker=not args.fit)
    if args.fit:
        meta = pipe.fit_ranker()
        p = meta["protocol"]
        print(f"ranker fitted on {p['users']:,} users' candidates for {p['holdout']:,} held-out "
              f"interactions (candidate recall {p['candidate_recall']:.4f}), retrievers retrained "
              f"on {p['retrained_on']:,} interactions; {meta['seconds']:.1f} s -> {cfg.ranker.run}")
    elif cfg.ranker is not None and pipe.ranker is None:
        raise GraphrecError(f"{cfg.where('ranker.run')}: no fitted ranker in {cfg.ranker.run}; "
                            "run with --fit first")
    if args.evaluate or not args.fit:
        metrics = pipe.evaluate()
        rows = [[k, f"{v:.4f}" if isinstance(v, float) else v] for k, v in metrics.items()]
        print(format_table(rows, ["metric", "value"]))
        if args.out:
            atomic_write_json(Path(args.out), metrics)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
