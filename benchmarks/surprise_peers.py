"""graphrec's explicit-rating models against Surprise's, on the same 5 folds of ml-100k.

The folds are built once per process from a fixed seed (a random permutation of ``u.data``'s
100,000 ratings cut into 5 equal parts, every rating tested once) and both libraries get the
identical (user, item, rating) triples: Surprise a ``Trainset`` of the raw ids, graphrec a
training graph of the same triples in dense indices (users and items indexed over the whole
file, so an id with no training rating is known to neither model's training). The folds'
fingerprint is stored with every record, so rows of different folds cannot be mixed.

Each (library, model) runs in its own child process over the 5 folds (fit, then predict the
fold's test pairs): RMSE and MAE per fold, the fit time (``fit`` only: Surprise's
``algo.fit(trainset)``, graphrec's ``model.fit(train)``, training included for the closed-loop
models) and the peak RSS during fit (the kernel's mark reset before each fit; Linux).
Surprise runs at its defaults (``random_state=0``), ``KNNBaseline`` twice: at its defaults
(user-based, MSD similarity) and as graphrec's ``knn-baseline`` is (item-based,
Pearson-baseline). Both libraries clip predictions to the rating scale. graphrec uses
``--threads`` torch threads (1 by default: Surprise is single-threaded).

Usage::

    python benchmarks/surprise_peers.py                 # appends results/surprise_peers.jsonl,
                                                        # rewrites surprise_peers.md
    python benchmarks/surprise_peers.py --libs surprise # one library (the md shows the latest
                                                        # record of every row)
    python benchmarks/surprise_peers.py --render        # rewrite the md from the jsonl
    python benchmarks/surprise_peers.py --quick --out DIR   # synthetic ratings, 2 folds, seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, REPO, git_commit, import_graphrec, load_avg, machine_info,
    maxrss_mib, reset_peak_rss)

# Surprise's algorithm -> its constructor at its defaults (and the one non-default row)
SURPRISE = ("SVD", "SVDpp", "NMF", "KNNBaseline", "KNNBaseline-item-pearson", "BaselineOnly")
# graphrec's counterpart of each Surprise row, and the rating models with no counterpart
COUNTERPART = {"SVD": "svd", "SVDpp": "svdpp", "NMF": "nmf",
               "KNNBaseline-item-pearson": "knn-baseline", "KNNBaseline": "knn-baseline",
               "BaselineOnly": "baseline-only"}
GRAPHREC = ("baseline-only", "svd", "svdpp", "knn-baseline", "nmf", "gcmc", "mf")
# Surprise's published ml-100k 5-fold RMSE (surpriselib.com / its README, at the defaults)
PUBLISHED = {"SVD": 0.934, "SVDpp": 0.920, "NMF": 0.963, "KNNBaseline": 0.931,
             "BaselineOnly": 0.944}


def load_triples(quick: bool, data: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw user, raw item, rating) of ml-100k's ``u.data``, or of the synthetic data set."""
    if quick:
        sys.path.insert(0, str(REPO))
        from graphrec.data.synthetic import SyntheticConfig, make_synthetic

        raw = make_synthetic(SyntheticConfig(num_users=200, num_items=120, num_clusters=6))
        frame = raw.frame
        return (frame["user"].to_numpy(), frame["item"].to_numpy(),
                frame["rating"].to_numpy(dtype=np.float64))
    path = Path(data) if data else DEFAULT_DATA / "ml-100k" / "u.data"
    table = np.loadtxt(path, dtype=np.int64)
    return table[:, 0], table[:, 1], table[:, 2].astype(np.float64)


def make_folds(n: int, k: int, seed: int) -> np.ndarray:
    """``[n]`` fold of each rating: a seeded permutation cut into ``k`` equal parts."""
    fold = np.empty(n, dtype=np.int64)
    for f, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), k)):
        fold[part] = f
    return fold


def fingerprint(fold: np.ndarray) -> str:
    return hashlib.sha256(fold.tobytes()).hexdigest()[:12]


def fit_surprise(name: str, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                 test: tuple[np.ndarray, np.ndarray, np.ndarray]
                 ) -> tuple[tuple[float, float], np.ndarray]:
    """Fit one Surprise algorithm on the raw triples; ((fit wall s, fit CPU s), test
    predictions)."""
    import pandas as pd
    import surprise

    scale = (float(ratings.min()), float(ratings.max()))
    frame = pd.DataFrame({"u": users, "i": items, "r": ratings})
    trainset = surprise.Dataset.load_from_df(
        frame, surprise.Reader(rating_scale=scale)).build_full_trainset()
    algo = {"SVD": lambda: surprise.SVD(random_state=0),
            "SVDpp": lambda: surprise.SVDpp(random_state=0),
            "NMF": lambda: surprise.NMF(random_state=0),
            "KNNBaseline": lambda: surprise.KNNBaseline(verbose=False),
            "KNNBaseline-item-pearson": lambda: surprise.KNNBaseline(
                sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False),
            "BaselineOnly": lambda: surprise.BaselineOnly(verbose=False)}[name]()
    t0, c0 = time.perf_counter(), time.process_time()
    algo.fit(trainset)
    seconds = (time.perf_counter() - t0, time.process_time() - c0)
    pred = np.array([algo.predict(u, i).est for u, i in zip(test[0].tolist(), test[1].tolist())])
    return seconds, pred


def fit_graphrec(name: str, num_users: int, num_items: int, users: np.ndarray,
                 items: np.ndarray, ratings: np.ndarray,
                 test: tuple[np.ndarray, np.ndarray, np.ndarray]
                 ) -> tuple[tuple[float, float], np.ndarray]:
    """Fit one graphrec model on the dense triples; trainable ones by the trainer at their
    training defaults, early-stopped on RMSE over 10% of the training ratings held out (as
    ``graphrec train`` does); ((fit wall s, fit CPU s), test predictions)."""
    import torch

    from graphrec.data.graph import make_graph
    from graphrec.models import build_model
    from graphrec.schema import RATING

    torch.manual_seed(0)
    model = build_model(name, num_users, num_items)
    valid = None
    if model.trainable:  # as graphrec train does: 10% of the training ratings validate
        held = np.random.default_rng(0).random(len(ratings)) < 0.1
        order = np.argsort(users[held], kind="stable")
        valid = [torch.from_numpy(x[held][order]) for x in (users, items, ratings)]
        users, items, ratings = users[~held], items[~held], ratings[~held]
    train = make_graph(num_users, num_items, torch.from_numpy(users), torch.from_numpy(items),
                       {RATING: torch.from_numpy(ratings).float()})
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(train)
    if valid is not None:
        from graphrec.evaluation.evaluator import EvalConfig
        from graphrec.split import Interactions, Split
        from graphrec.trainer import TrainConfig, train_model

        part = Interactions(valid[0], valid[1], valid[2].float())
        cfg = TrainConfig(**{**model.train_defaults, "progress": False})
        train_model(model, Split(train=train, test=part, valid=part), cfg,
                    EvalConfig(ks=(10,), metrics=("ndcg",), progress=False))
    seconds = (time.perf_counter() - t0, time.process_time() - c0)
    with torch.no_grad():
        pred = model.predict(torch.from_numpy(test[0]), torch.from_numpy(test[1]))
    return seconds, pred.double().numpy()


def child(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every fold of one (library, model): per-fold RMSE, MAE, fit seconds and peak RSS."""
    lib, name = spec.split(":", 1)
    if lib == "graphrec":
        import_graphrec(args.threads)
    raw_u, raw_i, r = load_triples(args.quick, args.data)
    fold = make_folds(len(r), args.folds, args.seed)
    u = np.unique(raw_u, return_inverse=True)[1]
    i = np.unique(raw_i, return_inverse=True)[1]
    folds = []
    for f in range(args.folds):
        tr, te = fold != f, fold == f
        reset_peak_rss()
        if lib == "surprise":
            seconds, pred = fit_surprise(name, raw_u[tr], raw_i[tr], r[tr],
                                         (raw_u[te], raw_i[te], r[te]))
        else:
            seconds, pred = fit_graphrec(name, int(u.max()) + 1, int(i.max()) + 1, u[tr], i[tr],
                                         r[tr], (u[te], i[te], r[te]))
        err = pred - r[te]
        folds.append({"fold": f, "rmse": float(np.sqrt(np.mean(err ** 2))),
                      "mae": float(np.mean(np.abs(err))), "fit_s": seconds[0],
                      "fit_cpu_s": seconds[1],
                      "peak_rss_mib": maxrss_mib(), "test": int(te.sum())})
        print(f"  {spec} fold {f}: rmse {folds[-1]['rmse']:.4f} fit {seconds[0]:.2f} s "
              f"(CPU {seconds[1]:.2f} s)",
              file=sys.stderr, flush=True)
    return {"library": lib, "model": name, "folds": folds, "fold_fingerprint": fingerprint(fold)}


def summarize(rec: dict[str, Any]) -> dict[str, Any]:
    folds = rec["folds"]
    out = {}
    for key in ("rmse", "mae"):
        values = [f[key] for f in folds]
        out[key] = {"mean": statistics.mean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    out["fit_s_median"] = statistics.median(f["fit_s"] for f in folds)
    out["fit_cpu_s_median"] = statistics.median(f["fit_cpu_s"] for f in folds)
    out["peak_rss_mib"] = max(f["peak_rss_mib"] for f in folds)
    return out


def _cell(rec: dict[str, Any] | None, key: str) -> str:
    if rec is None:
        return "–"
    s = rec["summary"][key]
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def _fit(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "–"
    return f"{rec['summary']['fit_s_median']:.2f} ({rec['summary']['fit_cpu_s_median']:.2f})"


def markdown(records: list[dict[str, Any]], quick: bool) -> str:
    """The side-by-side table (the latest record of each row), targets said met or missed."""
    records = sorted(records, key=lambda r: r["timestamp"])  # stable: a later run wins
    latest = {(r["library"], r["model"]): r for r in records if r.get("status") == "ok"}
    skipped = {}
    for r in records:  # the reason a row has no figures, unless a later run gave them
        if r.get("status") == "ok":
            skipped.pop(r["model"], None)
        elif r["library"] == "graphrec":
            skipped[r["model"]] = ("skipped: " + r["skip"] if r.get("skip") else
                                   "failed: " + "; ".join(r.get("error", [])))
    ctx = records[-1]
    lines = [f"Surprise peers: {ctx['machine']['cpu']}, graphrec at {ctx['threads']} torch "
             f"thread(s), Surprise single-threaded; commit {ctx['git_commit']}, last run "
             f"{ctx['timestamp']}, load average {ctx['load_avg_1m']} at its start. "
             f"{'Synthetic ratings (--quick)' if quick else 'ml-100k u.data'}, "
             f"{ctx['num_folds']} random folds (seed {ctx['seed']}, fingerprint "
             f"{ctx['fold_fingerprint']}), the same train/test triples for both libraries; "
             "mean ± std over folds; fit time the median fold, wall seconds (CPU seconds): "
             "the machine is shared, so the fit target is judged on CPU seconds, both "
             "libraries running one thread. Peak MiB: the child process's peak RSS "
             "(imports included).", "",
             "| Surprise | RMSE | MAE | fit s (CPU) | peak MiB | published RMSE | graphrec | RMSE "
             "| MAE | fit s (CPU) | peak MiB | RMSE ≤ | fit ≤ |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in SURPRISE:
        s = latest.get(("surprise", name))
        g_name = COUNTERPART[name]
        g = latest.get(("graphrec", g_name))
        rmse_ok = fit_ok = "–"
        if name == "KNNBaseline":  # another similarity: the item-pearson row is the target
            rmse_ok = fit_ok = "n/a"
        elif s and g:
            # at the table's 4 decimals: the same ALS differs in the float32 rounding only
            rmse_ok = "met" if (round(g["summary"]["rmse"]["mean"], 4)
                                <= round(s["summary"]["rmse"]["mean"], 4)) else "**missed**"
            fit_ok = "met" if (g["summary"]["fit_cpu_s_median"]
                               <= s["summary"]["fit_cpu_s_median"]) else "**missed**"
        lines.append(" | ".join([
            f"| `{name}`", _cell(s, "rmse"), _cell(s, "mae"),
            _fit(s),
            f"{s['summary']['peak_rss_mib']:.0f}" if s else "–",
            f"{PUBLISHED[name]:.3f}" if name in PUBLISHED else "–",
            f"`{g_name}`" + (f" ({skipped[g_name]})" if g_name in skipped else ""),
            _cell(g, "rmse"), _cell(g, "mae"),
            _fit(g),
            f"{g['summary']['peak_rss_mib']:.0f}" if g else "–", rmse_ok, fit_ok]) + " |")
    others = [m for m in GRAPHREC if m not in COUNTERPART.values()]
    lines += ["", "graphrec rating models with no Surprise counterpart:", "",
              "| graphrec | RMSE | MAE | fit s (CPU) | peak MiB |", "|---|---|---|---|---|"]
    for m in others:
        g = latest.get(("graphrec", m))
        if g is None:
            lines.append(f"| `{m}` | {skipped.get(m, '–')} "
                         "| | | |")
            continue
        lines.append(f"| `{m}` | {_cell(g, 'rmse')} | {_cell(g, 'mae')} | "
                     f"{_fit(g)} | {g['summary']['peak_rss_mib']:.0f} |")
    ours = [r for (lib, _), r in latest.items() if lib == "graphrec"]
    if ours:
        best = min(ours, key=lambda r: r["summary"]["rmse"]["mean"])
        value = best["summary"]["rmse"]["mean"]
        lines += ["", f"Moonshot (best graphrec RMSE ≤ 0.900): {'met' if value <= 0.9 else '**missed**'}"
                  f" (`{best['model']}` {value:.4f}). `KNNBaseline` at Surprise's defaults is "
                  "user-based with MSD similarity; graphrec's `knn-baseline` is item-based with "
                  "Pearson-baseline similarity, so its target is the `KNNBaseline-item-pearson` "
                  "row. The trainable models (`mf`, `gcmc`) are trained by graphrec's trainer at "
                  "their training defaults, early-stopped on 10% of the fold's training ratings "
                  "(as `graphrec train` does); the others fit on all of them."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="synthetic ratings, 2 folds, seconds")
    p.add_argument("--data", default=None, help="ml-100k's u.data (default ../shared/data)")
    p.add_argument("--libs", default="surprise,graphrec")
    p.add_argument("--only", default=None, help="comma-separated model names of either library")
    p.add_argument("--folds", type=int, default=None, help="default 5 (2 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results; "
                                               "--quick writes nothing without it)")
    p.add_argument("--render", action="store_true",
                   help="only rewrite surprise_peers.md from surprise_peers.jsonl")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.folds = args.folds or (2 if args.quick else 5)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args)))
        return 0
    import_graphrec(args.threads)
    from graphrec.models import REGISTRY

    libs = args.libs.split(",")
    only = set(args.only.split(",")) if args.only else None
    specs = [f"surprise:{m}" for m in SURPRISE if "surprise" in libs]
    specs += [f"graphrec:{m}" for m in GRAPHREC if "graphrec" in libs]
    specs = [s for s in specs if only is None or s.split(":", 1)[1] in only]
    if args.render:  # the table again from the records already there
        specs = []
    context = {"machine": machine_info(), "threads": args.threads, "git_commit": git_commit(),
               "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "load_avg_1m": load_avg(), "quick": args.quick, "num_folds": args.folds,
               "seed": args.seed}
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_RESULTS)
    path = None if out is None else out / "surprise_peers.jsonl"
    if path is not None:
        out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []

    def keep(rec: dict[str, Any]) -> None:  # appended at once: a killed run keeps its rows
        records.append(rec)
        if path is not None:
            with open(path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    for spec in specs:
        lib, name = spec.split(":", 1)
        if lib == "graphrec" and name not in REGISTRY:
            keep({"library": lib, "model": name, "status": "skipped",
                  "skip": "not registered", **context})
            continue
        print(f"{spec} ...", file=sys.stderr, flush=True)
        if args.quick:  # in this process: a child's imports would cost more than the fits
            rec = child(spec, args)
            rec.update(status="ok", summary=summarize(rec), **context)
            keep(rec)
            continue
        cmd = [sys.executable, __file__, "--child", spec, "--folds", str(args.folds),
               "--seed", str(args.seed), "--threads", str(args.threads)]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--data", args.data] if args.data else []
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
        sys.stderr.write(proc.stderr[-2000:] if proc.returncode else "")
        result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not result:
            last = proc.stderr.strip().splitlines()[-1:] or ["?"]
            keep({"library": lib, "model": name, "status": "failed", "error": last,
                  **context})
            continue
        rec = json.loads(result[-1][len("RESULT "):])
        rec.update(status="ok", summary=summarize(rec), **context)
        keep(rec)
    history = records
    if path is not None:
        history = [json.loads(line) for line in path.read_text().splitlines()]
        history = [r for r in history if r["quick"] == args.quick
                   and r.get("num_folds") == args.folds and r["seed"] == args.seed]
    fp = {r["fold_fingerprint"] for r in history if r.get("status") == "ok"}
    history = [r for r in history if r.get("fold_fingerprint", next(iter(fp), None)) in fp]
    for r in history:
        r.setdefault("fold_fingerprint", next(iter(fp), "?"))
    text = markdown(history, args.quick) if history else "no records\n"
    print(text)
    if out is not None:
        (out / "surprise_peers.md").write_text(text)
        print(f"wrote {out / 'surprise_peers.jsonl'} and surprise_peers.md", file=sys.stderr)
    return 0 if all(r["status"] in ("ok", "skipped") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
