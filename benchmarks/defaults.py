"""The defaults sweep: each trained model's training settings, chosen on validation parts only.

Every run is the real command (``python -m graphrec.train``) in its own process, with a 10%
validation part carved from the training data (``--valid-ratio 0.1``), early stopping on it
(patience 10, at most 200 epochs) and the setting under test; what is read back is the run's
``valid_metrics.json`` (the best epoch's model on the validation part) and ``history.jsonl``.
The test part is never looked at here.

Data sets: ml-100k's per-user random 80/20 split (leave-one-out for the sequential models, whose
validation part is each user's second-to-last item) and a Gowalla sample (3,000 users drawn
with seed 0 from the LightGCN ``train.txt``, every interaction of theirs, per-user random
80/20 split); Gowalla has no timestamps and no ratings, so the sequential and the rating models
are swept on ml-100k only, as is ``ncf``, whose full-ranking validation (an MLP over every
user-item pair) takes hours a run on the Gowalla sample on a 2-core CPU.

The chosen setting of a model is the one with the best mean, over the data sets, of its
validation metric divided by the best value on that data set (NDCG@20, NDCG@10 for the
sequential models, RMSE for the rating models): a default should be near the best everywhere, not best on one set. Among
settings within 0.01 of the best such score (0.002 for RMSE), the one whose runs took the least
time is chosen.

Usage::

    python benchmarks/defaults.py                       # every model; appends
                                                        # results/defaults.jsonl, rewrites .md
    python benchmarks/defaults.py --only lightgcn,bpr --threads 1
    python benchmarks/defaults.py --report              # the tables from the JSON lines
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_DATA, DEFAULT_RESULTS, REPO, git_commit, machine_info

SEQUENTIAL = ("sasrec", "bert4rec")
RATING = ("mf", "mlp-rating")  # scored by validation RMSE, lower is better
# ncf's full-ranking validation is an MLP over every (user, item) pair: on the Gowalla sample
# (3,000 x 27,000 pairs) about 100 s an epoch here, hours a run; it is swept on ml-100k only
ML_ONLY = ("ncf",)
DATA = Path(os.environ.get("GRAPHREC_DATA") or DEFAULT_DATA)  # holds ml-100k/ and gowalla/
# relative validation score within which settings count as equal: NDCG over ~1,000 validation
# users moves by about that between seeds; RMSE over ~10,000 ratings far less
TIE = {"ranking": 0.01, "rating": 0.002}
COMMON = ["--valid-ratio", "0.1", "--epochs", "200", "--patience", "10", "--no-progress",
          "--k", "10", "20"]


def _grid(**axes: list[Any]) -> list[list[str]]:
    """Every combination of the flags' values, as flag lists."""
    names = list(axes)
    return [[part for name, value in zip(names, values)
             for part in ("--" + name.replace("_", "-"), str(value))]
            for values in itertools.product(*(axes[n] for n in names))]


GRIDS: dict[str, list[list[str]]] = {
    "lightgcn": _grid(lr=[0.001, 0.005, 0.01], num_negatives=[1, 8]),
    "bpr": _grid(lr=[0.001, 0.005, 0.01], num_negatives=[1, 8]),
    "ncf": _grid(lr=[0.001, 0.005], num_negatives=[1, 4]),
    "mf": _grid(lr=[0.005, 0.01, 0.02], metric=["rmse"]),
    "mlp-rating": _grid(lr=[0.001, 0.005], batch_size=[256, 2048], metric=["rmse"]),
    "sasrec": _grid(lr=[0.001, 0.003], batch_size=[64, 128]),
    # BERT4Rec learns slowly at first (cloze training): patience is a real axis for it
    "bert4rec": _grid(lr=[0.001, 0.003], batch_size=[64, 128])
    + _grid(lr=[0.001, 0.003], batch_size=[64, 128], patience=[30]),
}


def metric_of(model: str) -> str:
    """The validation metric a model's settings are compared on."""
    return "rmse" if model in RATING else "ndcg@10" if model in SEQUENTIAL else "ndcg@20"


def relative(model: str, value: float, best: float) -> float:
    """``value`` against the best value (1.0 is the best; RMSE is better lower)."""
    return best / value if model in RATING else value / best


def gowalla_sample(work: Path, users: int = 3000, seed: int = 0) -> Path:
    """``users`` Gowalla users drawn with ``seed``, every training interaction of theirs, as a
    space-separated ``user item`` file (read with ``--sep ' ' --no-header``)."""
    out = work / f"gowalla-sample-{users}-{seed}.txt"
    if out.exists():
        return out
    lines = (DATA / "gowalla" / "train.txt").read_text().splitlines()
    rows = [line.split() for line in lines if len(line.split()) > 1]
    chosen = random.Random(seed).sample(rows, min(users, len(rows)))
    text = "".join(f"{r[0]} {item}\n" for r in chosen for item in r[1:])
    out.write_text(text)
    return out


def datasets(model: str, work: Path) -> dict[str, list[str]]:
    """The data flags of each data set a model is swept on."""
    ml = ["--data", str(DATA / "ml-100k" / "u.data")]
    if model in SEQUENTIAL:
        return {"ml-100k (leave-one-out)": ml + ["--split", "leave-one-out"]}
    if model in RATING or model in ML_ONLY:
        return {"ml-100k": ml}
    return {"ml-100k": ml,
            "Gowalla sample": ["--data", str(gowalla_sample(work)), "--sep", " ", "--no-header"]}


def run_one(model: str, data: str, data_flags: list[str], flags: list[str], work: Path,
            threads: int) -> dict[str, Any]:
    """One training run; its validation metrics, best epoch and time."""
    out = work / f"{model}-{abs(hash((data, tuple(flags))))}"
    cmd = [sys.executable, "-m", "graphrec.train", "--model", model, "--out", str(out),
           "--overwrite", *data_flags, *COMMON, *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=4 * 3600)
    rec: dict[str, Any] = {"model": model, "dataset": data, "flags": flags,
                           "wall_s": round(time.perf_counter() - start, 1)}
    if proc.returncode != 0:
        rec.update(status="failed", error=(proc.stderr.strip().splitlines() or ["?"])[-1])
        return rec
    valid = json.loads((out / "valid_metrics.json").read_text())
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    metric = metric_of(model)
    sign = -1 if model in RATING else 1
    scored = [(sign * h["valid"][metric], h["epoch"]) for h in history if "valid" in h]
    rec.update(status="ok", valid={k: v for k, v in valid.items() if "@" in k or k == "rmse"},
               epochs=len(history), best_epoch=max(scored)[1] if scored else None)
    return rec


def choose(records: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Per model, the flags with the best mean over data sets of valid metric / best there."""
    chosen = {}
    for model in dict.fromkeys(r["model"] for r in records):
        metric = metric_of(model)
        rows = [r for r in records if r["model"] == model and r["status"] == "ok"]
        pick = min if model in RATING else max
        best = {d: pick(r["valid"][metric] for r in rows if r["dataset"] == d)
                for d in {r["dataset"] for r in rows}}
        score: dict[tuple[str, ...], list[float]] = {}
        for r in rows:
            score.setdefault(tuple(r["flags"]), []).append(
                relative(model, r["valid"][metric], best[r["dataset"]]))
        full = {f: sum(s) / len(s) for f, s in score.items() if len(s) == len(best)}
        if full:  # within TIE of the best: the cheapest (a difference of noise is no reason)
            tie = TIE["rating" if model in RATING else "ranking"]
            near = [f for f, v in full.items() if v >= max(full.values()) - tie]
            wall = {f: sum(r["wall_s"] for r in rows if tuple(r["flags"]) == f) for f in near}
            chosen[model] = min(near, key=lambda f: wall[f])
    return chosen


def markdown(records: list[dict[str, Any]], context: dict[str, Any]) -> str:
    """The sweep's tables, one per model, the chosen setting marked."""
    chosen = choose(records)
    lines = [(f"# Defaults sweep ({context['date']}, {context['machine']['cpu']}, "
              f"{context['threads']} thread(s) per run, commit {context['commit']})"), "",
             "Validation parts only (see `benchmarks/defaults.py`): every run is "
             "`python -m graphrec.train --model MODEL " + " ".join(COMMON) + " FLAGS` on the "
             "data set named. **Bold**: the setting chosen (best mean over the data sets of "
             "the validation metric relative to the best there; within 0.01 of the best, 0.002 "
             "for RMSE, the fastest).", ""]
    for model in dict.fromkeys(r["model"] for r in records):
        metric = metric_of(model)
        recall = "hit@10" if model in SEQUENTIAL else "recall@20"
        lines += [f"## `{model}`", "",
                  f"| data | flags | valid {recall} | valid {metric} | epochs (best) | wall s |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in (r for r in records if r["model"] == model):
            flags = " ".join(r["flags"])
            if tuple(r["flags"]) == chosen.get(model):
                flags = f"**{flags}**"
            if r["status"] != "ok":
                lines.append(f"| {r['dataset']} | {flags} | failed: {r['error']} | | | |")
                continue
            v = r["valid"]
            lines.append(f"| {r['dataset']} | {flags} | {v[recall]:.4f} | {v[metric]:.4f} | "
                         f"{r['epochs']} ({r['best_epoch']}) | {r['wall_s']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(GRIDS), help="comma-separated models")
    p.add_argument("--threads", type=int, default=2, help="threads per run")
    p.add_argument("--grid", default=None, metavar="FROM:TO",
                   help="only grid points FROM..TO-1 of each model (to run parts side by side)")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="results folder")
    p.add_argument("--report", action="store_true", help="rewrite the tables only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Path(args.results)
    jsonl, md = results / "defaults.jsonl", results / "defaults.md"
    context = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": machine_info(),
               "threads": args.threads, "commit": git_commit()}
    if not args.report:
        models = [m.strip() for m in args.only.split(",") if m.strip()]
        unknown = [m for m in models if m not in GRIDS]
        if unknown:
            sys.exit(f"--only: no sweep for {unknown[0]!r}; choose from {', '.join(GRIDS)}")
        work = Path(tempfile.mkdtemp(prefix="graphrec-defaults-"))
        for model in models:
            for data, data_flags in datasets(model, work).items():
                lo, hi = (int(x) if x else None for x in (args.grid or ":").split(":"))
                for flags in GRIDS[model][lo:hi]:
                    rec = run_one(model, data, data_flags, flags, work, args.threads)
                    rec.update(context)
                    print(json.dumps({k: rec.get(k) for k in ("model", "dataset", "flags",
                                                              "status", "best_epoch", "wall_s")}),
                          flush=True)
                    with open(jsonl, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    if records:
        latest = {(r["model"], r["dataset"], tuple(r["flags"])): r for r in records}
        context = {**context, **{k: records[-1][k] for k in ("date", "machine", "threads",
                                                             "commit")}}
        md.write_text(markdown(list(latest.values()), context))
        print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
