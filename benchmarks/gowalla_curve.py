"""Time to quality on Gowalla: the test Recall@20 curve of a long training run, against the clock.

Trains a graph model on the LightGCN Gowalla split with the one trainer, evaluating the *test*
part every ``--eval-every`` epochs as the LightGCN papers do (there is no validation part in
that split; nothing is selected on it here: no early stopping, and the figures reported are the
curve, the first time each Recall@20 level is reached, and the last evaluation). Settings
default to the paper's: dim 64, 3 layers, Adam lr 1e-3, batch 2048, L2 1e-4, one negative.

The run folder keeps ``history.jsonl`` and the resumable ``trainer_state.pt``: Ctrl-C or
SIGTERM stops it, ``--resume`` continues it to the same curve (the wall clock counts only time
spent training and evaluating). ``--report`` turns the history into ``gowalla_curve.md``,
``.jsonl`` and ``.png`` under ``benchmarks/results/``.

Usage::

    python benchmarks/gowalla_curve.py --model lightgcn --epochs 1000   # runs/gowalla-lightgcn
    python benchmarks/gowalla_curve.py --model lightgcn --resume        # continue it
    python benchmarks/gowalla_curve.py --model lightgcn --report         # write the results
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, REPO, git_commit, load_avg, machine_info)

LEVELS = (0.15, 0.16, 0.17, 0.18, 0.182)


def train(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    import torch

    from graphrec.cli import run
    from graphrec.data.source import DataConfig, load_data
    from graphrec.evaluation.evaluator import EvalConfig
    from graphrec.models import build_model, model_config
    from graphrec.split import Split, SplitConfig, split
    from graphrec.trainer import TrainConfig, train_model

    torch.set_num_threads(args.threads)

    def main(_: Any) -> int:
        torch.manual_seed(0)
        ds = load_data(DataConfig(path=str(args.data)))
        parts = split(ds.graph, SplitConfig("given"))
        monitored = Split(parts.train, parts.test, valid=parts.test)  # the papers' protocol
        options = dict(o.split("=", 1) for o in args.set)
        cfg = model_config(args.model, {k: json.loads(v) for k, v in options.items()})
        model = build_model(args.model, ds.num_users, ds.num_items, cfg)
        model.fit(parts.train)
        train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                num_negatives=args.num_negatives, schedule=args.schedule,
                                eval_every=args.eval_every, patience=0, metric="recall@20",
                                seed=0, progress=not args.no_progress)
        eval_cfg = EvalConfig(ks=(20,), metrics=("recall", "ndcg"), progress=False)
        out = Path(args.run)
        out.mkdir(parents=True, exist_ok=True)
        (out / "settings.json").write_text(json.dumps(
            {"model": args.model, "model_config": options, "epochs": args.epochs,
             "batch_size": args.batch_size, "lr": args.lr, "eval_every": args.eval_every,
             "num_negatives": args.num_negatives, "schedule": args.schedule,
             "threads": args.threads}, indent=2))
        again = shlex.join(["python"] + [a for a in sys.argv if a != "--resume"] + ["--resume"])
        train_model(model, monitored, train_cfg, eval_cfg, out, resume=args.resume,
                    resume_command=again)
        return 0

    return run(main)


def report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    settings = json.loads((run_dir / "settings.json").read_text())
    evals = [(h["epoch"], h["elapsed"], h["valid"]["recall@20"], h["valid"]["ndcg@20"])
             for h in history if "valid" in h]
    lrs = {h["epoch"]: h.get("lr") for h in history}
    schedule = settings.get("schedule", "none")
    if not evals:
        raise SystemExit(f"{run_dir}: no evaluation yet")
    first = {}
    for level in LEVELS:
        hit = next(((e, t) for e, t, r, _ in evals if r >= level), None)
        first[str(level)] = {"epoch": hit[0], "seconds": hit[1]} if hit else None
    epoch_s = [h["seconds"] for h in history]
    best = max(evals, key=lambda ev: ev[2])
    rec = {"benchmark": "gowalla_curve", "model": settings["model"], "settings": settings,
           "epochs_done": len(history), "train_seconds_per_epoch_median":
               sorted(epoch_s)[len(epoch_s) // 2],
           "elapsed_s": history[-1]["elapsed"], "curve": [
               {"epoch": e, "elapsed_s": t, "recall@20": r, "ndcg@20": n} for e, t, r, n in evals],
           "first_reached": first, "last": {"epoch": evals[-1][0], "recall@20": evals[-1][2],
                                            "ndcg@20": evals[-1][3]},
           "best_recall@20": best[2],
           "machine": machine_info(), "git_commit": git_commit(), "load_avg_1m": load_avg(),
           "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    lines = [f"Gowalla, `{settings['model']}` (options {settings['model_config'] or 'default'}), "
             f"batch {settings['batch_size']}, lr {settings['lr']}, "
             f"{settings.get('num_negatives', 1)} negative(s) per positive, "
             f"{settings['threads']} threads; "
             f"schedule {schedule}; {rec['machine']['cpu']}; test Recall/NDCG@20 every "
             f"{settings['eval_every']} epochs (the papers' protocol; "
             + ("the plateau schedule cuts the learning rate on this test curve, as BARS does, "
                "so the figures are optimistic" if schedule == "plateau" else "no selection")
             + f"); {len(history)} epochs in "
             f"{rec['elapsed_s'] / 60:.1f} min (median epoch {rec['train_seconds_per_epoch_median']:.0f} s "
             "of training, evaluation apart).", "",
             "| Recall@20 level | first reached at epoch | wall clock |", "|---|---|---|"]
    for level, hit in first.items():
        lines.append(f"| {level} | " + (f"{hit['epoch']} | {hit['seconds'] / 60:.1f} min |" if hit
                                        else "not yet | – |"))
    lines += ["", f"Last evaluation: epoch {rec['last']['epoch']}, Recall@20 "
              f"{rec['last']['recall@20']:.4f}, NDCG@20 {rec['last']['ndcg@20']:.4f}. Best "
              f"Recall@20: {best[2]:.4f} (NDCG@20 {best[3]:.4f}) at epoch {best[0]}.", "",
              "| epoch | minutes | Recall@20 | NDCG@20 | lr |", "|---|---|---|---|---|"]
    lines += [f"| {e} | {t / 60:.1f} | {r:.4f} | {n:.4f} | {lrs.get(e) or 0:.0e} |"
              for e, t, r, n in evals]
    out = Path(args.out) if args.out else DEFAULT_RESULTS
    out.mkdir(parents=True, exist_ok=True)
    name = f"gowalla_curve_{args.tag or settings['model']}"
    with open(out / f"{name}.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot([t / 60 for _, t, _, _ in evals], [r for _, _, r, _ in evals], marker=".")
        for level in LEVELS[:3]:
            ax.axhline(level, color="grey", lw=0.5, ls="--")
        ax.set_xlabel("wall clock, minutes (training + evaluation)")
        ax.set_ylabel("test Recall@20")
        ax.set_title(f"Gowalla, {settings['model']}, {rec['machine']['cpu']}")
        fig.savefig(out / f"{name}.png", dpi=110)
    except ImportError:
        print("matplotlib not installed: no PNG", file=sys.stderr)
    print("\n".join(lines[:8]))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lightgcn")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="model option, e.g. --set l2=1e-4")
    p.add_argument("--data", default=str(DEFAULT_DATA / "gowalla"))
    p.add_argument("--tag", default=None,
                   help="names the run folder and the results files (default: the model)")
    p.add_argument("--run", default=None, help="run folder (default runs/gowalla-TAG)")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-negatives", type=int, default=1, help="negatives per positive (1)")
    p.add_argument("--schedule", default="none",
                   help="learning-rate schedule (none; plateau cuts it on the test curve)")
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report", action="store_true", help="write results from the run's history")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.run = args.run or str(REPO / "runs" / f"gowalla-{args.tag or args.model}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return report(args) if args.report else train(args)


if __name__ == "__main__":
    sys.exit(main())
