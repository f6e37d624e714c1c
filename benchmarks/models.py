"""The measured model table: every registered model, trained and evaluated by the real command.

Each entry runs ``python -m graphrec.train`` in its own process, at the settings listed in
:data:`PLAN` (also printed in the table), and reads back what the run folder holds:
test metrics (Precision/Recall/NDCG@20, or HitRate/NDCG@10 for the sequential models on
leave-one-out; RMSE for rating models), the training time, the time per epoch
(``history.jsonl``), the number of parameters (from the ``model.pt`` checkpoint) and the
process's peak RSS (``wait4``'s ``ru_maxrss``, so imports and data loading are included).

Settings are short on purpose so the whole table runs in minutes on a 2-core CPU: the epoch
counts are stated per row, and the long accuracy runs (Gowalla LightGCN's ~1,000 epochs) are
separate, reported in the README. Entries that cannot run on a data set say why (no ratings,
no timestamps, a full ranking too large for a CPU run) instead of disappearing.

Usage::

    python benchmarks/models.py                     # ml-100k and Gowalla; appends
                                                    # results/models.jsonl, rewrites models.md
    python benchmarks/models.py --quick             # the synthetic data set, < 1 minute,
                                                    # writes nothing unless --out DIR
    python benchmarks/models.py --only lightgcn,pop # a subset
    python benchmarks/models.py --defaults          # ml-100k, every model at its defaults
                                                    # (no flags but --model, --data, --split):
                                                    # results/models_defaults.{jsonl,md}
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, REPO, git_commit, load_avg, machine_info)

SEQUENTIAL = ("sasrec", "bert4rec")
RATING_MODELS = ("mf", "mlp-rating")


@dataclass
class Entry:
    """One row: a model on a data set with its flags, or the reason it is skipped."""

    dataset: str
    model: str
    flags: list[str] = field(default_factory=list)
    skip: str | None = None


def _ml100k() -> str:
    return str(DEFAULT_DATA / "ml-100k" / "u.data")


def _gowalla() -> str:
    return str(DEFAULT_DATA / "gowalla")


# Per (data set, model): the settings of the table. Implicit models on ml-100k use the
# per-user random 80/20 split with every rating a positive; sequential ones leave-one-out.
ML100K: dict[str, list[str]] = {
    "pop": [], "random": [],
    "graph-filter": ["--set", "k=64"],
    "lightgcn": ["--epochs", "60", "--lr", "0.005"],
    "bpr": ["--epochs", "60", "--lr", "0.005"],
    "mf": [],  # its defaults: 50 epochs, lr 0.01, l2 0.3
    "ncf": ["--epochs", "10", "--lr", "0.001", "--num-negatives", "4", "--batch-size", "256"],
    "mlp-rating": ["--epochs", "30", "--lr", "0.001", "--batch-size", "256", "--valid-ratio",
                   "0.1", "--metric", "rmse", "--patience", "3"],
    # short runs (their defaults train up to 200 epochs with max_len 50; see the README for
    # the longer max_len 200 runs)
    "sasrec": ["--split", "leave-one-out", "--epochs", "20"],
    "bert4rec": ["--split", "leave-one-out", "--epochs", "20", "--lr", "0.003",
                 "--batch-size", "64"],
}
GOWALLA: dict[str, list[str]] = {
    "pop": [], "random": [], "graph-filter": [],
    "lightgcn": ["--epochs", "2"],
    "bpr": ["--epochs", "10"],
}
GOWALLA_SKIP = {
    "mf": "no ratings in the LightGCN files",
    "mlp-rating": "no ratings in the LightGCN files",
    "ncf": "full ranking is an MLP over 29,858 x 40,981 pairs: hours on 2 cores",
    "sasrec": "no timestamps in the LightGCN files",
    "bert4rec": "no timestamps in the LightGCN files",
}


# --defaults: the README's defaults-only table, in this order
DEFAULTS_RANKING = ("pop", "bpr", "lightgcn", "graph-filter", "ncf")
DEFAULTS_SEQUENTIAL = ("pop", "sasrec", "bert4rec")
LOO = "ml-100k (leave-one-out)"


def plan(args: argparse.Namespace, registered: list[str]) -> list[Entry]:
    """The entries to run: every registered model on each data set (or the quick set, or the
    defaults-only set)."""
    only = set(args.only.split(",")) if args.only else None
    entries: list[Entry] = []
    if args.defaults:
        entries += [Entry("ml-100k", m, ["--data", _ml100k()]) for m in DEFAULTS_RANKING]
        entries += [Entry(LOO, m, ["--data", _ml100k(), "--split", "leave-one-out"])
                    for m in DEFAULTS_SEQUENTIAL]
    elif args.quick:
        for model in registered:
            flags = ["--epochs", "2"]
            if model in SEQUENTIAL:
                flags += ["--split", "leave-one-out"]
            entries.append(Entry("synthetic", model, [] if model in ("pop", "random",
                                                                    "graph-filter") else flags))
    else:
        for model in registered:
            if model in ML100K:
                entries.append(Entry("ml-100k", model, ["--data", _ml100k(), *ML100K[model]]))
            else:
                entries.append(Entry("ml-100k", model, skip="no settings chosen yet"))
        for model in registered:
            if model in GOWALLA:
                entries.append(Entry("gowalla", model, ["--data", _gowalla(), *GOWALLA[model]]))
            else:
                entries.append(Entry("gowalla", model,
                                     skip=GOWALLA_SKIP.get(model, "no settings chosen yet")))
    return [e for e in entries if only is None or e.model in only]


# ``python -m graphrec.train`` as it is, reporting its own peak RSS (imports included) on exit
WRAPPER = """import resource, runpy, sys
sys.argv = ["graphrec.train"] + sys.argv[1:]
try:
    runpy.run_module("graphrec.train", run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code
print("PEAK_RSS_MIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)
sys.exit(code)
"""


def run_entry(e: Entry, work: Path, threads: int) -> dict[str, Any]:
    """Run one entry's training command; read its run folder back."""
    out = work / f"{e.dataset}-{e.model}"
    cmd = [sys.executable, "-c", WRAPPER, "--model", e.model, "--no-progress",
           "--out", str(out), *e.flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    stderr = proc.stderr
    wall = time.perf_counter() - t0
    rec: dict[str, Any] = {"dataset": e.dataset, "model": e.model, "flags": e.flags,
                           "command": "python -m graphrec.train " + " ".join(
                               ["--model", e.model, *e.flags]), "wall_s": wall}
    if proc.returncode != 0:
        rec.update(status="failed", error=stderr.strip().splitlines()[-1:] or ["?"])
        return rec
    metrics = json.loads((out / "metrics.json").read_text())
    rec["metrics"] = metrics
    history = out / "history.jsonl"
    if history.exists():
        epochs = [json.loads(line) for line in history.read_text().splitlines()]
        rec["epochs"] = len(epochs)
        rec["epoch_s"] = (sum(x["seconds"] for x in epochs) / len(epochs)) if epochs else None
    rec["fit_s"] = metrics.get("fit_seconds")
    rec["eval_s"] = metrics.get("eval_seconds")
    rec["parameters"] = _parameters(out)
    rec["peak_rss_mib"] = _peak_from_log(stderr)
    rec["status"] = "ok"
    return rec


def _parameters(run: Path) -> int | None:
    sys.path.insert(0, str(REPO))
    from graphrec.checkpoint import load_checkpoint

    try:
        model = load_checkpoint(run).model
    except Exception:  # noqa: BLE001 - the table shows a dash
        return None
    return sum(p.numel() for p in model.parameters())


def _peak_from_log(stderr: str) -> float | None:
    for line in reversed(stderr.splitlines()):
        if line.startswith("PEAK_RSS_MIB "):
            return float(line.split()[1])
    return None


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(records: list[dict[str, Any]], context: dict[str, Any]) -> str:
    """One table per data set."""
    lines = [f"Model table: {context['machine']['cpu']}, {context['threads']} threads, commit "
             f"{context['git_commit']}, {context['timestamp']}; load average "
             f"{context['load_avg_1m']} at the start. Metrics on the test part; settings per row "
             + ("(every model at its defaults: `python -m graphrec.train --model MODEL --data "
                "ml-100k/u.data [--split leave-one-out]`)." if context.get("defaults") else
                "(short training on purpose, see benchmarks/README.md)."), ""]
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        rows = [r for r in records if r["dataset"] == dataset]
        lines += [f"### {dataset}", "",
                  "| model | P@20 | R@20 | N@20 | HR@10 | N@10 | RMSE | epochs | s/epoch | "
                  "train s | eval s | parameters | peak RSS MiB | settings |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["status"] != "ok":
                why = r.get("skip") or "; ".join(r.get("error", []))
                lines.append(f"| `{r['model']}` | {r['status']}: {why} |" + " |" * 12)
                continue
            m = r["metrics"]
            seq = r["model"] in SEQUENTIAL or r["dataset"] == LOO
            flags = list(r["flags"])
            if "--data" in flags:  # the data set is the section's title
                at = flags.index("--data")
                del flags[at:at + 2]
            settings = " ".join(flags)
            cells = [_fmt(m.get("precision@20")) if not seq else "–",
                     _fmt(m.get("recall@20")) if not seq else "–",
                     _fmt(m.get("ndcg@20")) if not seq else "–",
                     _fmt(m.get("hit@10")) if seq else "–",
                     _fmt(m.get("ndcg@10")) if seq else "–",
                     _fmt(m.get("rmse")), _fmt(r.get("epochs")),
                     _fmt(r.get("epoch_s"), 2), _fmt(r.get("fit_s"), 1),
                     _fmt(r.get("eval_s"), 1), _fmt(r.get("parameters")),
                     _fmt(r.get("peak_rss_mib"), 0), f"`{settings}`" if settings else "defaults"]
            lines.append(f"| `{r['model']}` | " + " | ".join(cells) + " |")
        lines.append("")
    lines += verdicts(records)
    return "\n".join(lines)


def verdicts(records: list[dict[str, Any]]) -> list[str]:
    """The defaults table's claims, checked: lightgcn > bpr > pop on Recall@20 and NDCG@20 on
    ml-100k, each sequential model > pop on leave-one-out NDCG@10."""
    got = {(r["dataset"], r["model"]): r["metrics"] for r in records if r["status"] == "ok"}
    lines = []

    def order(dataset: str, models: tuple[str, ...], metric: str) -> None:
        if all((dataset, m) in got for m in models):
            values = [got[dataset, m][metric] for m in models]
            held = all(a > b for a, b in itertools.pairwise(values))
            lines.append(f"- {dataset}: {' > '.join(f'`{m}`' for m in models)} on {metric}: "
                         f"{'yes' if held else '**no**'} "
                         f"({' / '.join(f'{v:.4f}' for v in values)})")

    for metric in ("recall@20", "ndcg@20"):
        order("ml-100k", ("lightgcn", "bpr", "pop"), metric)
    for model in ("sasrec", "bert4rec"):
        order(LOO, (model, "pop"), "ndcg@10")
    return ["Checks:", "", *lines, ""] if lines else []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="synthetic data, 2 epochs, < 1 minute")
    p.add_argument("--defaults", action="store_true",
                   help="ml-100k at every model's defaults (the README's defaults table)")
    p.add_argument("--only", default=None, help="comma-separated model names")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results; "
                                               "--quick writes nothing without it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--render", action="store_true",
                   help="only rewrite models.md from the last run in models.jsonl")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    from graphrec.models import REGISTRY

    name = "models_defaults" if args.defaults else "models"
    if args.render:
        out = Path(args.out) if args.out else DEFAULT_RESULTS
        rows = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        last = [r for r in rows if r["timestamp"] == rows[-1]["timestamp"]]
        (out / f"{name}.md").write_text(markdown(last, last[-1]))
        return 0
    start = time.perf_counter()
    context = {"machine": machine_info(), "threads": args.threads, "git_commit": git_commit(),
               "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "load_avg_1m": load_avg(), "quick": args.quick,
               "defaults": args.defaults}
    records = []
    with tempfile.TemporaryDirectory(prefix="graphrec-models-") as tmp:
        for e in plan(args, list(REGISTRY)):
            if e.skip:
                records.append({"dataset": e.dataset, "model": e.model, "flags": e.flags,
                                "status": "skipped", "skip": e.skip})
                continue
            print(f"{e.dataset}: {e.model} ...", file=sys.stderr, flush=True)
            rec = run_entry(e, Path(tmp), args.threads)
            print(f"  {rec['status']} in {rec['wall_s']:.0f} s", file=sys.stderr, flush=True)
            records.append(rec)
    context["script_seconds"] = time.perf_counter() - start
    text = markdown(records, context)
    print(text)
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{name}.jsonl", "a") as fh:
            for rec in records:
                fh.write(json.dumps({**rec, **context}) + "\n")
        (out / f"{name}.md").write_text(text)
        print(f"wrote {out / name}.jsonl and {name}.md", file=sys.stderr)
    return 0 if all(r["status"] in ("ok", "skipped") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
