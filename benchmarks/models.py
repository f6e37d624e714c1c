"""The measured model table: every registered model, trained and evaluated by the real command.

Each entry runs ``python -m graphrec.train`` in its own process, at the settings listed in
:data:`PLAN` (also printed in the table), and reads back what the run folder holds:
test metrics (Precision/Recall/NDCG@20, or HitRate/NDCG@10 for the sequential models on
leave-one-out; RMSE for rating models), the training time, the time per epoch
(``history.jsonl``), the number of parameters (from the ``model.pt`` checkpoint) and the
process's peak RSS (``wait4``'s ``ru_maxrss``, so imports and data loading are included).

On ml-100k every model but the sequential ones runs ``--folds 5`` (graphrec's k-fold
cross-validation: every interaction tested once) and the table gives each metric's mean ± std
over the folds; the sequential models run once on leave-one-out. Each row also carries the
model's cold-start figures from ``benchmarks/coldstart.py``'s committed results (NDCG@20 on new
items and on new users, or "n/a" where that benchmark has no row for the model), and a bar
chart of NDCG@10 is drawn beside the Markdown table. Published figures are quoted under the
table with their protocol (:data:`ANCHORS`), never mixed into it.

Settings are short on purpose so the whole table runs in well under an hour on a 2-core CPU:
the epoch counts are stated per row, and the long accuracy runs (Gowalla LightGCN's ~1,000
epochs) are separate, reported in the README. Entries that cannot run on a data set say why (no
ratings, no timestamps, a full ranking too large for a CPU run) instead of disappearing.

Usage::

    python benchmarks/models.py                     # ml-100k and Gowalla; appends
                                                    # results/models.jsonl, rewrites models.md
    python benchmarks/models.py --quick             # the synthetic data set, 2 folds,
                                                    # < 1 minute, writes nothing unless --out DIR
    python benchmarks/models.py --only lightgcn,pop # a subset
    python benchmarks/models.py --datasets ml-100k --skip gcmc,slim --name models_folds
                                                    # one data set, fewer models, its own files
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
RATING_MODELS = ("mf", "mlp-rating", "baseline-only", "svd", "svdpp", "nmf", "knn-baseline", "gcmc")
TABLE_METRICS = ("precision@10", "recall@10", "ndcg@10", "precision@20", "recall@20", "ndcg@20")
COLDSTART_RESULTS = "coldstart_ml100k.jsonl"

#: published figures quoted beside the table, each with its own protocol (never in the table)
ANCHORS = [
    "Gowalla, LightGCN's split (He et al., SIGIR 2020), Recall@20 / NDCG@20: LightGCN 0.1830 / "
    "0.1554, NGCF 0.1570 / 0.1327, MF-BPR 0.1291 / 0.1109 (the LightGCN paper's table 3).",
    "Gowalla, same split: GF-CF 0.1849 / 0.1518 (Shen et al., CIKM 2021).",
    "ml-100k ratings, 5-fold random folds, RMSE: Surprise's own table, SVD 0.934, SVD++ 0.920, "
    "NMF 0.963, KNNBaseline 0.931, BaselineOnly 0.944 (surpriselib.com; graphrec's side by side "
    "on the same folds: benchmarks/surprise_peers.py).",
    "ml-100k ratings, the canonical u1.base/u1.test split: GC-MC 0.910 RMSE without side "
    "features, 0.905 with (Berg et al., 2017); not the 5-fold protocol of this table.",
]


@dataclass
class Entry:
    """One row: a model on a data set with its flags, or the reason it is skipped."""

    dataset: str
    model: str
    flags: list[str] = field(default_factory=list)
    skip: str | None = None
    folds: int | None = None


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
    # at their defaults
    "two-tower": [], "content-knn": [], "hybrid": [],
    "itemknn": [], "userknn": [], "ease": [], "slim": [], "ials": [],
    "baseline-only": [], "svd": [], "svdpp": [], "nmf": [], "knn-baseline": [], "gcmc": [],
}
GOWALLA: dict[str, list[str]] = {
    "pop": [], "random": [], "graph-filter": [],
    "lightgcn": ["--epochs", "2"],
    "bpr": ["--epochs", "10"],
    "itemknn": [], "userknn": [], "ials": [], "ease": [],
    "two-tower": ["--epochs", "2"],
}
NO_RATINGS = "no ratings in the LightGCN files"
GOWALLA_SKIP = {
    **{m: NO_RATINGS for m in RATING_MODELS},
    "slim": "its FISTA holds four dense 40,981 x 40,981 matrices (25 GiB): refused by default",
    "ncf": "full ranking is an MLP over 29,858 x 40,981 pairs: hours on 2 cores",
    "sasrec": "no timestamps in the LightGCN files",
    "bert4rec": "no timestamps in the LightGCN files",
    "content-knn": "no item text or side features in the LightGCN files",
    "hybrid": "no item text or side features in the LightGCN files",
}


# --defaults: the README's defaults-only table, in this order
DEFAULTS_RANKING = ("pop", "bpr", "lightgcn", "graph-filter", "ncf")
DEFAULTS_SEQUENTIAL = ("pop", "sasrec", "bert4rec")
LOO = "ml-100k (leave-one-out)"


def plan(args: argparse.Namespace, registered: list[str]) -> list[Entry]:
    """The entries to run: every registered model on each data set (or the quick set, or the
    defaults-only set); on ml-100k (and the quick set) non-sequential models run
    ``args.folds``-fold cross-validation."""
    folds = args.folds if args.folds and args.folds > 1 else None
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
                                                                    "graph-filter") else flags,
                                 folds=None if model in SEQUENTIAL else folds))
    else:
        for model in registered:
            if model in ML100K:
                seq = model in SEQUENTIAL
                entries.append(Entry("ml-100k", model, ["--data", _ml100k(), *ML100K[model]],
                                     folds=None if seq else folds))
            else:
                entries.append(Entry("ml-100k", model, skip="no settings chosen yet"))
        for model in registered:
            if model in GOWALLA:
                entries.append(Entry("gowalla", model, ["--data", _gowalla(), *GOWALLA[model]]))
            else:
                entries.append(Entry("gowalla", model,
                                     skip=GOWALLA_SKIP.get(model, "no settings chosen yet")))
    skip = set(args.skip.split(",")) if args.skip else set()
    sets = set(args.datasets.split(",")) if args.datasets else None
    return [e for e in entries if (only is None or e.model in only) and e.model not in skip
            and (sets is None or e.dataset.split(" ")[0] in sets)]


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
    flags = [*e.flags, *(["--folds", str(e.folds)] if e.folds else [])]
    cmd = [sys.executable, "-c", WRAPPER, "--model", e.model, "--no-progress",
           "--out", str(out), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    stderr = proc.stderr
    wall = time.perf_counter() - t0
    rec: dict[str, Any] = {"dataset": e.dataset, "model": e.model, "flags": e.flags,
                           "folds": e.folds, "command": "python -m graphrec.train " + " ".join(
                               ["--model", e.model, *flags]), "wall_s": wall}
    if proc.returncode != 0:
        rec.update(status="failed", error=stderr.strip().splitlines()[-1:] or ["?"])
        return rec
    metrics = json.loads((out / "metrics.json").read_text())
    if e.folds:  # the parent's {metric: {mean, std, folds}}; the first fold for the rest
        rec["metrics_std"] = {k: v["std"] for k, v in metrics.items() if isinstance(v, dict)}
        metrics = {k: v["mean"] if isinstance(v, dict) else v for k, v in metrics.items()}
        out = out / "fold-0"
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


def _pm(m: dict[str, Any], sd: dict[str, Any], key: str) -> str:
    """``mean ± std`` (std only for k-fold rows), or a dash."""
    if m.get(key) is None:
        return "–"
    return f"{m[key]:.4f}" + (f" ± {sd[key]:.4f}" if key in sd else "")


def coldstart_figures(results: Path) -> dict[str, str]:
    """Per model, its NDCG@20 on new items and on new users from the cold-start benchmark's
    committed results (the last run of each section; the headline fold-in for new users)."""
    path = results / COLDSTART_RESULTS
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    got: dict[str, dict[str, float]] = {}
    for section, tag in (("cold-items", "items"), ("cold-users", "users")):
        metas = [i for i, r in enumerate(rows) if r.get("section") == section and r.get("meta")]
        if not metas:
            continue
        for r in rows[metas[-1] + 1:]:
            if r.get("section") != section or r.get("meta"):
                continue
            model = r.get("model")
            if model in (None, "lightfm", "oracle-pop") or "ndcg@20" not in r:
                continue
            if r.get("headline") is False:
                continue
            if model == "lightgcn-similar":  # lightgcn with item-item content edges
                got.setdefault("lightgcn", {})["items (similar_k=20)"] = r["ndcg@20"]
            else:
                got.setdefault(model, {})[tag] = r["ndcg@20"]
    return {m: ", ".join(f"{k} {v:.3f}" for k, v in d.items()) for m, d in got.items()}


def markdown(records: list[dict[str, Any]], context: dict[str, Any],
             cold: dict[str, str] | None = None) -> str:
    """One table per data set, the cold-start column, the published anchors and the checks."""
    cold = cold or {}
    lines = [f"Model table: {context['machine']['cpu']}, {context['threads']} threads, commit "
             f"{context['git_commit']}, {context['timestamp']}; load average "
             f"{context['load_avg_1m']} at the start. Metrics on the test part; settings per row "
             + ("(every model at its defaults: `python -m graphrec.train --model MODEL --data "
                "ml-100k/u.data [--split leave-one-out]`)." if context.get("defaults") else
                "(short training on purpose, see benchmarks/README.md)."), ""]
    if any(r.get("folds") for r in records):
        lines += ["Rows with a fold count are k-fold cross-validation (`--folds K`): each "
                  "metric's mean ± sample std over the folds, every interaction tested once; "
                  "times are per fold (the mean). Sequential models run once on leave-one-out "
                  "(their HitRate@10 and NDCG@10 in their own columns). "
                  "Cold start: NDCG@20 on new items / new users from "
                  "`benchmarks/coldstart.py` (its own split and protocol; n/a: no row there).", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        rows = [r for r in records if r["dataset"] == dataset]
        lines += [f"### {dataset}", "",
                  "| model | folds | P@10 | R@10 | N@10 | P@20 | R@20 | N@20 | HR@10 (seq) | "
                  "N@10 (seq) | RMSE | cold start | epochs | s/epoch | train s | parameters | "
                  "peak RSS MiB | settings |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["status"] != "ok":
                why = r.get("skip") or "; ".join(r.get("error", []))
                lines.append(f"| `{r['model']}` | {r['status']}: {why} |" + " |" * 16)
                continue
            m, sd = r["metrics"], r.get("metrics_std", {})
            seq = r["model"] in SEQUENTIAL or r["dataset"] == LOO
            flags = list(r["flags"])
            if "--data" in flags:  # the data set is the section's title
                at = flags.index("--data")
                del flags[at:at + 2]
            settings = " ".join(flags)
            ranking = ["–"] * 6 if seq else [_pm(m, sd, k) for k in TABLE_METRICS]
            cells = [str(r.get("folds") or 1), *ranking,
                     _pm(m, sd, "hit@10") if seq else "–", _pm(m, sd, "ndcg@10") if seq else "–",
                     _pm(m, sd, "rmse"),
                     cold.get(r["model"], "n/a") if dataset == "ml-100k" else "n/a",
                     _fmt(r.get("epochs")), _fmt(r.get("epoch_s"), 2), _fmt(r.get("fit_s"), 1),
                     _fmt(r.get("parameters")), _fmt(r.get("peak_rss_mib"), 0),
                     f"`{settings}`" if settings else "defaults"]
            lines.append(f"| `{r['model']}` | " + " | ".join(cells) + " |")
        lines.append("")
    if not context.get("quick"):
        lines += ["Published figures, each under its own protocol (quoted, not measured here):",
                  "", *[f"- {a}" for a in ANCHORS], ""]
    lines += verdicts(records)
    return "\n".join(lines)


def bar_chart(records: list[dict[str, Any]], path: Path) -> bool:
    """NDCG@10 per model (error bars: the std over folds), one panel per data set; False
    without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sets = [d for d in dict.fromkeys(r["dataset"] for r in records)
            if any(r["status"] == "ok" and "ndcg@10" in r.get("metrics", {}) for r in records
                   if r["dataset"] == d)]
    if not sets:
        return False
    fig, axes = plt.subplots(len(sets), 1, figsize=(10, 3.2 * len(sets)), squeeze=False)
    for ax, dataset in zip(axes[:, 0], sets):
        rows = [r for r in records if r["dataset"] == dataset and r["status"] == "ok"
                and "ndcg@10" in r["metrics"] and r["model"] not in SEQUENTIAL]
        rows.sort(key=lambda r: -r["metrics"]["ndcg@10"])
        names = [r["model"] for r in rows]
        ax.bar(names, [r["metrics"]["ndcg@10"] for r in rows],
               yerr=[r.get("metrics_std", {}).get("ndcg@10", 0.0) for r in rows], capsize=3,
               color=["#c44e52" if n in RATING_MODELS else "#4c72b0" for n in names])
        ax.set_title(f"{dataset}: NDCG@10 (test; red: rating models ranking by predicted rating)")
        ax.tick_params(axis="x", rotation=60)
        ax.set_ylabel("NDCG@10")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


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
    p.add_argument("--skip", default=None, help="comma-separated model names left out")
    p.add_argument("--datasets", default=None, help="comma-separated: ml-100k, gowalla")
    p.add_argument("--name", default=None,
                   help="results file stem (default models, or models_defaults)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results; "
                                               "--quick writes nothing without it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--folds", type=int, default=None,
                   help="k-fold cross-validation on ml-100k (default 5; --quick: 2; 1: off)")
    p.add_argument("--render", action="store_true",
                   help="only rewrite models.md from the last run in models.jsonl")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.folds is None:
        args.folds = 2 if args.quick else (None if args.defaults else 5)
    sys.path.insert(0, str(REPO))
    from graphrec.models import REGISTRY

    name = args.name or ("models_defaults" if args.defaults else "models")
    if args.render:
        out = Path(args.out) if args.out else DEFAULT_RESULTS
        rows = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        last = [r for r in rows if r["timestamp"] == rows[-1]["timestamp"]]
        (out / f"{name}.md").write_text(markdown(last, last[-1], coldstart_figures(DEFAULT_RESULTS)))
        bar_chart(last, out / f"{name}.png")
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
    text = markdown(records, context, coldstart_figures(DEFAULT_RESULTS))
    print(text)
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{name}.jsonl", "a") as fh:
            for rec in records:
                fh.write(json.dumps({**rec, **context}) + "\n")
        if bar_chart(records, out / f"{name}.png"):
            text += f"\n![NDCG@10 per model]({name}.png)\n"
        (out / f"{name}.md").write_text(text)
        print(f"wrote {out / name}.jsonl, {name}.md and {name}.png", file=sys.stderr)
    return 0 if all(r["status"] in ("ok", "skipped") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
