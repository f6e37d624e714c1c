"""Cold start on ml-100k: new items, new users, the semantic re-ranker on new users, and the cost
of the new-user path.

ml-100k is converted once into the work folder with ``--text-cols movie_title,class`` (MiniLM
text embeddings, :mod:`graphrec.data.text`). Every graphrec model is a run of ``python -m
graphrec.train --data GRAPH.pt --split cold-items|cold-users`` at the library's defaults,
reused when the work folder has its metrics and the model's defaults have not changed since
(an interrupted run is resumed); everything else is evaluated here by graphrec's own
evaluator (:func:`graphrec.evaluation.evaluator.evaluate`) on the same split, so the protocol is
identical.

``--cold-items`` (test_ratio 0.2 of the items held out whole, seed 0; the evaluator ranks among
the cold items only): ``content-knn``, ``two-tower`` (its item tower reads ``text_emb`` and the
genres), ``hybrid`` and ``lightgcn --set similar_k=20`` when the library has them, ``random``;
LightFM (WARP, 64 components; item features identity + genres + ``text_emb``, and the same
without identity features) fitted on the same training part, its epochs chosen on a validation
draw of cold items carved from the training items (seed 1), scored with ``model.predict``;
and an oracle, popularity among the cold items counted on the test part itself.

``--cold-users`` (test_ratio 0.2 of the users with more than 5 interactions held out whole,
seed 0; each scored from its first 5 interactions, the onboarding items): fold-in LightGCN, MF
and BPR (and ``hybrid`` when the library has it), each checkpoint evaluated with
``fold_in='mean'`` and ``'ls'``, the headline one chosen on a validation draw (the same protocol
with split seed 1: other runs on other cold users); SASRec, two-tower, graph-filter and
content-knn from the onboarding items; popularity.

``--llm-stage``: the semantic re-ranker (:mod:`graphrec.serve.semantic`) on top of the best
cold-users retriever: its top 100 from the onboarding items, the user's text vector the mean
``text_emb`` of the onboarding items, ``alpha`` chosen on the seed-1 draw, the NDCG@20 change on
the seed-0 test with a paired bootstrap interval.

``--speed``: MiniLM encoding throughput of the 1,682 item texts (warm-up, median of 3 runs,
batch 64) and the latency of ``recommend_new`` for one new user with 5 items on the bpr
cold-users checkpoint and on an untrained Gowalla-sized bpr model (29,858 x 40,981, dim 64),
p50/p99 over 500 users, fold-in ``mean`` and ``ls``.

``--quick``: every mode on the built-in synthetic data (random unit vectors stand in for the
text embeddings) at tiny settings; writes nothing unless ``--out``.

Usage::

    python benchmarks/coldstart.py --cold-items   # results/coldstart_ml100k.{jsonl,md}
    python benchmarks/coldstart.py --cold-users   # (each mode rewrites its own section)
    python benchmarks/coldstart.py --llm-stage
    python benchmarks/coldstart.py --speed        # results/coldstart_speed.{jsonl,md}
    python benchmarks/coldstart.py --quick --out /tmp/cold
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, REPO, git_commit, import_graphrec, load_avg, machine_info)

TEXT_COLS = ("movie_title", "class")
K, N = 20, 100
COLD_ITEM_MODELS = ("content-knn", "two-tower", "hybrid", "lightgcn-similar", "random")
FOLD_MODELS = ("lightgcn", "mf", "bpr")
HISTORY_MODELS = ("sasrec", "two-tower", "graph-filter", "content-knn")
ALPHAS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.3, 0.0)
LIGHTFM = {"no_components": 64, "loss": "warp", "learning_rate": (0.05, 0.01),
           "epochs": (1, 2, 3, 5, 10, 20, 30)}
QUICK = {"train": ["--epochs", "1"],
         "lightfm": {**LIGHTFM, "no_components": 16, "learning_rate": (0.05,), "epochs": (1, 2)},
         "alphas": (1.0, 0.8, 0.0), "users": 50, "big": (2000, 3000)}
SECTIONS = ("cold-items", "cold-users", "llm-stage")


# -- data and runs ---------------------------------------------------------------------------

def graph_file(args: argparse.Namespace) -> Path:
    """ml-100k converted once with text embeddings; --quick: the built-in synthetic data with
    random unit 16-d vectors as ``text_emb``."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / ("synthetic.pt" if args.quick else "ml100k.pt")
    if path.exists():
        return path
    if args.quick:
        import torch

        from graphrec.data.graph import build, save
        from graphrec.data.synthetic import make_synthetic

        ds = build(make_synthetic())
        gen = torch.Generator().manual_seed(0)
        ds.graph["item"]["text_emb"] = torch.nn.functional.normalize(
            torch.randn(ds.num_items, 16, generator=gen), dim=1)
        save(ds, path)
        return path
    from graphrec import convert
    from graphrec.cli import run

    raw = Path(args.data) / "ml-100k" / "u.data"
    if run(convert.main, [str(raw), "-o", str(path), "--text-cols", ",".join(TEXT_COLS)]) != 0:
        raise SystemExit(f"converting {raw} failed")
    return path


def train_run(graph: Path, out: Path, model: str, split_args: list[str],
              extra: list[str]) -> dict[str, Any]:
    """The run folder of ``model`` at its defaults (reused when its metrics are there), as
    ``{"run", "metrics"}`` or ``{"run", "error"}``."""
    from graphrec import train
    from graphrec.cli import run

    if (out / "metrics.json").exists() and stale(out, model, extra):
        print(f"{out}: the library's defaults of {model} changed since this run: retraining", flush=True)
        (out / "metrics.json").unlink()
        (out / "trainer_state.pt").unlink(missing_ok=True)
    if not (out / "metrics.json").exists():
        argv = ["--model", model, "--data", str(graph), "--out", str(out), "--no-progress",
                "--overwrite"] + split_args + extra
        if (out / "trainer_state.pt").exists():  # stopped before: continue it
            argv = ["--resume", str(out), "--no-progress"]
        err = io.StringIO()

        class Tee(io.TextIOBase):
            def write(self, s: str) -> int:
                err.write(s)
                return sys.__stderr__.write(s)

        start = time.perf_counter()
        with contextlib.redirect_stderr(Tee()):
            code = run(train.main, argv)
        if code in (130, 143):  # interrupted (Ctrl-C, SIGTERM): stop here, resumable
            raise SystemExit(f"{out}: training interrupted; run the same command again to resume")
        if code != 0:
            lines = [ln for ln in err.getvalue().splitlines() if ln.startswith(("error", "internal"))]
            return {"run": str(out), "error": (lines or [f"exit {code}"])[-1]}
        print(f"trained {out.name} in {time.perf_counter() - start:.0f} s", flush=True)
    return {"run": str(out), "metrics": json.loads((out / "metrics.json").read_text())}


def stale(out: Path, model: str, extra: list[str]) -> bool:
    """Whether a run's model options or training defaults differ from the library's defaults
    now (with the ``--set`` options of ``extra``): others tune defaults while runs are kept."""
    from graphrec.config import model_train_defaults, parse_option
    from graphrec.models import model_config

    saved = json.loads((out / "config.json").read_text())
    sets = dict(parse_option(v) for flag, v in zip(extra, extra[1:]) if flag == "--set")
    now = json.loads(json.dumps(dataclasses.asdict(model_config(model, sets))))
    given = {f"--{k.replace('_', '-')}" for k in model_train_defaults(model)} & set(extra)
    train = {k: v for k, v in model_train_defaults(model).items() if f"--{k.replace('_', '-')}" not in given}
    return now != saved["model_options"] or any(saved["train"].get(k) != v for k, v in train.items())


def run_split(run: Path, ds: Any) -> Any:
    """The split of a run folder, rebuilt from its config.json."""
    from graphrec.config import resolve
    from graphrec.split import split

    return split(ds.graph, resolve(json.loads((run / "config.json").read_text()), {}).split)


class Fixed:
    """Scores computed outside graphrec (LightFM, the oracle) as a model the evaluator takes:
    ``score(users) -> [B, num_items]`` from a ``[num_users, num_items]`` table."""

    uses_history = False

    def __init__(self, table: Any) -> None:
        self.table = table

    def score(self, users: Any, history: Any = None) -> Any:
        return self.table[users]

    def serves_new_items(self) -> bool:
        return True


def evalcfg() -> Any:
    from graphrec.evaluation.evaluator import EvalConfig

    return EvalConfig(ks=(K,), metrics=("recall", "ndcg"), progress=False)


def graphrec_changes() -> list[str]:
    """Files under graphrec/ that differ from the commit (others edit while this runs)."""
    out = subprocess.run(["git", "status", "--porcelain", "--", "graphrec"], cwd=REPO,
                         capture_output=True, text=True)
    return [ln[3:] for ln in out.stdout.splitlines()]


def meta(args: argparse.Namespace, section: str, **extra: Any) -> dict[str, Any]:
    return {"section": section, "meta": True, "command": command(args), "commit": git_commit(),
            "graphrec_uncommitted": graphrec_changes(), "machine": machine_info(),
            "threads": args.threads, "load_avg": load_avg(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def command(args: argparse.Namespace) -> str:
    return "python benchmarks/coldstart.py --" + args.mode


def optional_models() -> dict[str, bool]:
    """Whether the library has the two models others are adding (read right now)."""
    from graphrec.models import REGISTRY
    from graphrec.models.lightgcn import LightGCNConfig

    return {"hybrid": "hybrid" in REGISTRY,
            "lightgcn-similar": "similar_k" in {f.name for f in dataclasses.fields(LightGCNConfig)}}


# -- cold items ------------------------------------------------------------------------------

def lightfm_features(graph: Any, identity: bool) -> Any:
    """Item features ``[I, F]``: identity (optional), every multi-hot block (genres) with rows
    summing to 1, ``text_emb`` as stored (unit rows)."""
    import numpy as np
    import scipy.sparse as sp

    store = graph["item"]
    n = int(store.num_nodes)
    blocks = [sp.identity(n, dtype=np.float32, format="csr")] if identity else []
    for name, value in store.items():
        if name in ("num_nodes", "text_emb") or not hasattr(value, "dim") or value.dim() != 2:
            continue
        v = value.float()
        blocks.append(sp.csr_matrix((v / v.sum(1, keepdim=True).clamp(min=1)).numpy()))
    if "text_emb" in store:
        blocks.append(sp.csr_matrix(store["text_emb"].float().numpy()))
    return sp.hstack(blocks, format="csr", dtype=np.float32)


def lightfm_scores(model: Any, features: Any, num_users: int, items: Any, threads: int) -> Any:
    """``[num_users, num_items]`` table: ``model.predict`` for every user over ``items``."""
    import numpy as np
    import torch

    cols = items.numpy().astype(np.int32)
    uu = np.repeat(np.arange(num_users, dtype=np.int32), cols.size)
    pred = model.predict(uu, np.tile(cols, num_users), item_features=features, num_threads=threads)
    table = torch.zeros(num_users, features.shape[0])
    table[:, items] = torch.from_numpy(pred.reshape(num_users, cols.size)).float()
    return table


def lightfm_fit_eval(parts: Any, features: Any, settings: dict[str, Any], checkpoints: tuple[int, ...],
                     threads: int) -> dict[int, dict[str, float]]:
    """Fit LightFM on ``parts.train`` epoch by epoch; graphrec's metrics over
    ``parts.cold_items`` after each epoch in ``checkpoints``."""
    import numpy as np
    import scipy.sparse as sp
    from lightfm import LightFM

    from graphrec.evaluation.evaluator import evaluate

    g = parts.train
    u, i = g["user", "interacts", "item"].edge_index
    shape = (int(g["user"].num_nodes), int(g["item"].num_nodes))
    x = sp.coo_matrix((np.ones(u.numel(), np.float32), (u.numpy(), i.numpy())), shape=shape)
    model = LightFM(no_components=settings["no_components"], loss=settings["loss"],
                    learning_rate=settings["learning_rate"], random_state=0)
    out, start = {}, time.perf_counter()
    for epoch in range(1, max(checkpoints) + 1):
        model.fit_partial(x, item_features=features, epochs=1, num_threads=threads)
        if epoch in checkpoints:
            table = lightfm_scores(model, features, shape[0], parts.cold_items, threads)
            out[epoch] = {**evaluate(Fixed(table), parts, "test", evalcfg()),
                          "fit_seconds": time.perf_counter() - start}
            print(f"lightfm epoch {epoch}: ndcg@20 {out[epoch]['ndcg@20']:.4f}", flush=True)
    return out


def lightfm_rows(work: Path, ds: Any, parts: Any, settings: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    """LightFM with and without identity features: learning rate and epochs chosen on a
    validation draw of cold items among the training items (seed 1), then refitted on the
    training part and tested. Every fit is cached in the work folder under its settings."""
    import torch

    from graphrec.split import SplitConfig, split

    path = work / "lightfm.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    cache = {"valid": cache.get("valid", {}), "test": cache.get("test", {})}

    def key(identity: bool, lr: float, **more: Any) -> str:
        return json.dumps({"identity": identity, "learning_rate": lr, "no_components":
                           settings["no_components"], "loss": settings["loss"],
                           "epochs": list(settings["epochs"]), "threads": threads, **more})

    inner = split(parts.train, SplitConfig(method="cold-items", test_ratio=0.2, valid_ratio=0.0, seed=1))
    warm = torch.ones(ds.num_items, dtype=torch.bool)
    warm[parts.cold_items] = False  # the test's cold items are no validation candidates
    inner.cold_items = inner.cold_items[warm[inner.cold_items]]
    rows = []
    for identity in (True, False):
        feats = lightfm_features(ds.graph, identity)
        valid = {}
        for lr in settings["learning_rate"]:
            k = key(identity, lr)
            if k not in cache["valid"]:
                fits = lightfm_fit_eval(inner, feats, {**settings, "learning_rate": lr},
                                        tuple(settings["epochs"]), threads)
                cache["valid"][k] = {str(e): m["ndcg@20"] for e, m in fits.items()}
                cache["valid"][k]["users"] = next(iter(fits.values()))["users"]
                path.write_text(json.dumps(cache))
            valid.update({(lr, int(e)): v for e, v in cache["valid"][k].items() if e != "users"})
        lr, epochs = max(valid, key=lambda g: (valid[g], g[0], -g[1]))  # ties: larger lr, fewer epochs
        k = key(identity, lr, chosen=epochs)
        if k not in cache["test"]:
            cache["test"][k] = lightfm_fit_eval(parts, feats, {**settings, "learning_rate": lr},
                                                (epochs,), threads)[epochs]
            path.write_text(json.dumps(cache))
        test = cache["test"][k]
        rows.append({"what": "LightFM WARP, item features " + ("identity + " if identity else "")
                     + "genres + text_emb", "model": "lightfm", "identity": identity,
                     "learning_rate": lr, "epochs": epochs, "recall@20": test["recall@20"],
                     "ndcg@20": test["ndcg@20"], "users": test["users"],
                     "fit_seconds": test["fit_seconds"],
                     "valid": {f"{g[0]}/{g[1]}": v for g, v in sorted(valid.items())},
                     "valid_users": cache["valid"][key(identity, lr)]["users"],
                     "valid_items": int(inner.cold_items.numel()), "features": int(feats.shape[1])})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def cold_items(args: argparse.Namespace) -> int:
    import lightfm
    import torch

    from graphrec.data.graph import load
    from graphrec.evaluation.evaluator import evaluate
    from graphrec.split import SplitConfig, split

    graph = graph_file(args)
    work = Path(args.work) / ("synthetic" if args.quick else "ml100k") / "cold-items"
    split_args = ["--split", "cold-items", "--test-ratio", "0.2", "--split-seed", "0"]
    have = optional_models()
    rows = []
    for name in COLD_ITEM_MODELS:
        model = "lightgcn" if name == "lightgcn-similar" else name
        if args.quick and name in have:
            continue  # --quick: the others' models have their own tests
        if name in have and not have[name]:
            rows.append({"what": f"`{name}`", "model": name, "absent": True})
            print(f"{name}: absent from graphrec (not in the registry / LightGCNConfig has no "
                  "similar_k)", flush=True)
            continue
        extra = (["--set", "similar_k=20"] if name == "lightgcn-similar" else [])
        extra += QUICK["train"] if args.quick and name != "random" else []
        res = train_run(graph, work / name, model, split_args, extra)
        what = "`lightgcn --set similar_k=20`" if name == "lightgcn-similar" else f"`{name}`"
        row = {"what": what, "model": name, "run": res["run"]}
        if "error" in res:
            row["error"] = res["error"]
        else:
            m = res["metrics"]
            row.update({k: m[k] for k in ("recall@20", "ndcg@20", "users", "fit_seconds")})
        rows.append(row)
        print(json.dumps(row), flush=True)
    ds = load(graph)
    # the test part is the same whatever the validation ratio (cold interactions are assigned
    # first); LightFM and the oracle fit on every warm interaction
    parts = split(ds.graph, SplitConfig(method="cold-items", test_ratio=0.2, valid_ratio=0.0, seed=0))
    settings = QUICK["lightfm"] if args.quick else LIGHTFM
    rows += lightfm_rows(work, ds, parts, settings, args.threads)
    counts = torch.bincount(parts.test.item, minlength=ds.num_items).float()
    oracle = evaluate(Fixed(counts.expand(ds.num_users, -1)), parts, "test", evalcfg())
    rows.append({"what": "popularity among cold items (ORACLE: counts the test interactions)",
                 "model": "oracle-pop", "recall@20": oracle["recall@20"],
                 "ndcg@20": oracle["ndcg@20"], "users": oracle["users"]})
    print(json.dumps(rows[-1]), flush=True)
    info = meta(args, "cold-items", cold_items=int(parts.cold_items.numel()),
                test_interactions=len(parts.test), dropped=parts.dropped,
                train_interactions=int(parts.train["user", "interacts", "item"].num_edges),
                lightfm_version=lightfm.__version__, lightfm_settings=settings, optional=have)
    write(args, "cold-items", info, rows)
    return 0


def render_cold_items(info: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## New items (`--cold-items`)", "",
             f"`{info['command']}` at commit {info['commit']}, {info['machine']['cpu']}, "
             f"{info['threads']} threads, load average {info['load_avg']} at the start. Split "
             f"`cold-items`, test_ratio 0.2, seed 0: {info['cold_items']} items held out with all "
             f"their {info['test_interactions']:,} interactions ({info['dropped']} dropped), "
             f"{info['train_interactions']:,} training interactions. Each user ranks the "
             f"{info['cold_items']} cold items only (graphrec's evaluator, identical for every "
             "row). graphrec models: runs at their defaults (10% of the warm interactions held "
             "out for early stopping where trained). LightFM "
             f"{info['lightfm_version']} (WARP, {info['lightfm_settings']['no_components']} "
             f"components, user identity features, {info['threads']} threads) fits every warm "
             "interaction; its learning rate from "
             f"{list(info['lightfm_settings']['learning_rate'])} and epochs from "
             f"{list(info['lightfm_settings']['epochs'])} chosen on a validation draw (seed 1: 20% of "
             "the items, the warm ones among them as cold candidates, LightFM refitted without "
             "them), then refitted and scored by `model.predict` over the cold items.", "",
             "| model | Recall@20 | NDCG@20 | users | fit s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("absent"):
            lines.append(f"| {r['what']} | absent from graphrec at this commit | | | |")
        elif "error" in r:
            lines.append(f"| {r['what']} | failed: {r['error']} | | | |")
        else:
            extra = (f" (lr {r['learning_rate']}, {r['epochs']} epochs)" if r["model"] == "lightfm" else "")
            fit = f"{r['fit_seconds']:.0f}" if "fit_seconds" in r else "–"
            lines.append(f"| {r['what']}{extra} | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} | "
                         f"{r['users']} | {fit} |")
    lfm = [r for r in rows if r["model"] == "lightfm"]
    ours = [r for r in rows if "ndcg@20" in r and r["model"] not in ("lightfm", "oracle-pop", "random")]
    oracle = next(r for r in rows if r["model"] == "oracle-pop")
    if ours and lfm:
        best, rival = max(ours, key=lambda r: r["ndcg@20"]), max(lfm, key=lambda r: r["ndcg@20"])
        lines += ["", "Goal checks (best graphrec model by test NDCG@20, against the better "
                  "LightFM variant on the test part, which favours LightFM):", "",
                  f"* beats LightFM's hybrid: {best['what']} NDCG@20 {best['ndcg@20']:.4f} vs "
                  f"{rival['what']} {rival['ndcg@20']:.4f} "
                  f"({best['ndcg@20'] / rival['ndcg@20'] - 1:+.1%}; Recall@20 {best['recall@20']:.4f} "
                  f"vs {rival['recall@20']:.4f}): **{'yes' if best['ndcg@20'] > rival['ndcg@20'] else 'no'}**",
                  f"* at least 3x popularity among cold items (oracle): NDCG@20 "
                  f"{best['ndcg@20'] / oracle['ndcg@20']:.2f}x, Recall@20 "
                  f"{best['recall@20'] / oracle['recall@20']:.2f}x: "
                  f"**{'yes' if best['ndcg@20'] >= 3 * oracle['ndcg@20'] else 'no'}**"]
    if lfm:
        epochs = sorted({int(g.split("/")[1]) for g in lfm[0]["valid"]})
        lines += ["", "LightFM's validation NDCG@20 by learning rate and epochs (the chosen in bold; "
                  "hogwild threads make a refit differ slightly from run to run):", "",
                  "| variant | lr | " + " | ".join(f"{e} ep" for e in epochs) + " |",
                  "|---|---:|" + "---:|" * len(epochs)]
        for r in lfm:
            for lr in sorted({float(g.split("/")[0]) for g in r["valid"]}, reverse=True):
                cells = [(f"**{r['valid'][f'{lr}/{e}']:.4f}**" if (lr, e) == (r["learning_rate"], r["epochs"])
                          else f"{r['valid'][f'{lr}/{e}']:.4f}") for e in epochs]
                lines.append(f"| {'with' if r['identity'] else 'without'} identity | {lr} | "
                             + " | ".join(cells) + " |")
        lines += ["", f"(validation: {lfm[0]['valid_items']} warm items as cold candidates, "
                  f"{lfm[0]['valid_users']} users; {lfm[0]['features']} item features with identity. "
                  "A cold item's identity embedding and bias stay at their initial values: "
                  "with identity features its vector is the trained genre and text parts plus "
                  "that noise.)"]
    return lines


# -- cold users ------------------------------------------------------------------------------

def cold_user_split_args(seed: int) -> list[str]:
    return ["--split", "cold-users", "--test-ratio", "0.2", "--onboard", "5", "--split-seed", str(seed)]


def fold_in_metrics(run: Path, ds: Any) -> dict[str, dict[str, float]]:
    """Test metrics of a run's checkpoint with each fold-in (cached in the run folder)."""
    from graphrec.checkpoint import load_checkpoint
    from graphrec.evaluation.evaluator import evaluate

    cache = run / "coldstart_fold_in.json"
    if cache.exists() and cache.stat().st_mtime >= (run / "model.pt").stat().st_mtime:
        return json.loads(cache.read_text())
    ckpt, parts = load_checkpoint(run), run_split(run, ds)
    out = {f: evaluate(ckpt.model.eval(), parts, "test", evalcfg(), fold_in=f) for f in ("mean", "ls")}
    cache.write_text(json.dumps(out))
    return out


def cold_users_table(args: argparse.Namespace, graph: Path, ds: Any) -> list[dict[str, Any]]:
    """Every cold-users row: fold-in models (both fold-ins, seed 0 test and seed 1 validation)
    and the models that read the onboarding items."""
    base = Path(args.work) / ("synthetic" if args.quick else "ml100k") / "cold-users"
    rows = []
    # the LightFM-style hybrid folds in too, when the library has it
    folds = FOLD_MODELS + (("hybrid",) if optional_models()["hybrid"] else ())
    for model in folds + HISTORY_MODELS + ("pop",):
        extra = QUICK["train"] if args.quick and model in folds + ("sasrec", "two-tower") else []
        if args.quick and model not in ("bpr", "content-knn", "pop"):
            continue  # --quick: bpr, content-knn and pop cover every path
        res = train_run(graph, base / "seed0" / model, model, cold_user_split_args(0), extra)
        if "error" in res:
            rows.append({"what": f"`{model}`", "model": model, "error": res["error"]})
            continue
        if model not in folds:
            m = res["metrics"]
            rows.append({"what": f"`{model}`", "model": model, "headline": True, "run": res["run"],
                         **{k: m[k] for k in ("recall@20", "ndcg@20", "users", "fit_seconds")}})
            print(json.dumps(rows[-1]), flush=True)
            continue
        val = train_run(graph, base / "seed1" / model, model, cold_user_split_args(1), extra)
        test = fold_in_metrics(Path(res["run"]), ds)
        check = abs(test["mean"]["ndcg@20"] - res["metrics"]["ndcg@20"])
        valid = fold_in_metrics(Path(val["run"]), ds) if "error" not in val else None
        chosen = (max(("mean", "ls"), key=lambda f: (valid[f]["ndcg@20"], f == "mean"))
                  if valid else "mean")
        for f in ("mean", "ls"):
            rows.append({"what": f"`{model}`, fold-in {f}", "model": model, "fold_in": f,
                         "headline": f == chosen, "run": res["run"],
                         "recall@20": test[f]["recall@20"], "ndcg@20": test[f]["ndcg@20"],
                         "users": test[f]["users"], "fit_seconds": res["metrics"]["fit_seconds"],
                         "valid_ndcg@20": valid[f]["ndcg@20"] if valid else None,
                         "valid_users": valid[f]["users"] if valid else None,
                         "check_mean_vs_run": check})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def cold_users(args: argparse.Namespace) -> int:
    from graphrec.data.graph import load
    from graphrec.split import SplitConfig, split

    graph = graph_file(args)
    ds = load(graph)
    rows = cold_users_table(args, graph, ds)
    parts = {s: split(ds.graph, SplitConfig(method="cold-users", test_ratio=0.2, onboard=5, seed=s))
             for s in (0, 1)}
    overlap = int((parts[0].cold_users[:, None] == parts[1].cold_users[None, :]).any(1).sum())
    info = meta(args, "cold-users", cold_users=int(parts[0].cold_users.numel()),
                test_interactions=len(parts[0].test), onboard_interactions=len(parts[0].onboard),
                valid_cold_users=int(parts[1].cold_users.numel()), overlap=overlap)
    write(args, "cold-users", info, rows)
    return 0


def render_cold_users(info: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## New users (`--cold-users`)", "",
             f"`{info['command']}` at commit {info['commit']}, {info['machine']['cpu']}, "
             f"{info['threads']} threads. Split `cold-users`, test_ratio 0.2, onboard 5, seed 0: "
             f"{info['cold_users']} users held out whole; each is scored from its first 5 "
             f"interactions in time ({info['onboard_interactions']:,} onboarding interactions, "
             f"excluded from the ranking) against the rest ({info['test_interactions']:,} test "
             "interactions), over all items. Runs at their defaults. Fold-in models (mean of the "
             "history's item vectors, or the ridge least-squares user vector, reg 1): the "
             "headline fold-in is the better one on the validation draw, the same protocol with "
             f"split seed 1 ({info['valid_cold_users']} cold users, {info['overlap']} of them "
             "also cold in seed 0) and its own runs.", "",
             "| model | Recall@20 | NDCG@20 | users | fit s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['what']} | failed: {r['error']} | | | |")
        elif r["headline"]:
            lines.append(f"| {r['what']} | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} | "
                         f"{r['users']} | {r['fit_seconds']:.0f} |")
    best = best_cold_user(rows)
    pop = next((r for r in rows if r["model"] == "pop" and "ndcg@20" in r), None)
    if best and pop:
        lines += ["", f"Best: {best['what']}, NDCG@20 {best['ndcg@20'] / pop['ndcg@20']:.2f}x "
                  f"popularity's ({best['ndcg@20']:.4f} vs {pop['ndcg@20']:.4f})."]
    folds = [r for r in rows if "fold_in" in r]
    if folds:
        lines += ["", "Both fold-ins of each checkpoint (test: seed 0; validation: seed 1):", "",
                  "| model | fold-in | valid NDCG@20 | test Recall@20 | test NDCG@20 | headline |",
                  "|---|---|---:|---:|---:|---|"]
        for r in folds:
            v = f"{r['valid_ndcg@20']:.4f}" if r["valid_ndcg@20"] is not None else "–"
            lines.append(f"| `{r['model']}` | {r['fold_in']} | {v} | {r['recall@20']:.4f} | "
                         f"{r['ndcg@20']:.4f} | {'✓' if r['headline'] else ''} |")
        worst = max(r["check_mean_vs_run"] for r in folds)
        lines += ["", f"(`mean` recomputed here from the checkpoints matches the runs' own "
                  f"metrics.json to {worst:.1e} NDCG@20.)"]
    return lines


def best_cold_user(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    cands = [r for r in rows if r.get("headline") and "ndcg@20" in r and r["model"] != "pop"]
    return max(cands, key=lambda r: r["ndcg@20"]) if cands else None


# -- the semantic re-ranker on new users -------------------------------------------------------

def rerank_eval(run: Path, ds: Any, fold: str, alphas: tuple[float, ...]) -> dict[Any, Any]:
    """Per alpha, per-user NDCG@20 and Recall@20 ``[U]`` of the re-ranked top 100 of a
    cold-users run's checkpoint, scored from the onboarding items."""
    import torch

    from graphrec.batches import History
    from graphrec.checkpoint import load_checkpoint
    from graphrec.evaluation.metrics import METRIC_FUNCTIONS
    from graphrec.models.coldstart import NewUsers
    from graphrec.serve.candidates import retrieve
    from graphrec.serve.semantic import history_vectors, semantic

    parts = run_split(run, ds)
    model = NewUsers(load_checkpoint(run).model.eval(), fold)
    emb = ds.graph["item"]["text_emb"].float()
    onboard = parts.onboard.csr(ds.num_users)
    users = torch.unique(parts.test.user)
    hist = History.of(*onboard, users)
    with torch.no_grad():
        cand = retrieve([model], users, onboard, [N], N, histories=[hist])
    items, scores = cand.items, cand.scores[..., 0].masked_fill(~cand.mask, float("-inf"))
    key = torch.unique(parts.test.user * ds.num_items + parts.test.item)
    n_rel = torch.bincount(parts.test.user, minlength=ds.num_users)[users]
    prof = history_vectors(emb, hist, 0)
    vecs = emb[items.clamp(min=0)]  # [U, N, D]
    out: dict[Any, Any] = {}
    for alpha in alphas:
        pos = semantic(scores, vecs, prof, K, alpha, mask=cand.mask)
        top = items.gather(1, pos.clamp(min=0)).masked_fill(pos < 0, -1)
        hits = torch.isin(users[:, None] * ds.num_items + top.clamp(min=0), key) & (top >= 0)
        out[alpha] = {m: METRIC_FUNCTIONS[m](hits, n_rel, K).double() for m in ("ndcg", "recall")}
    out["candidate_recall"] = float((torch.isin(users[:, None] * ds.num_items + items.clamp(min=0), key)
                                     & cand.mask).sum(1).div(n_rel).mean())
    out["users"] = int(users.numel())
    return out


def bootstrap(d: Any, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of per-user differences ``d``."""
    import numpy as np

    d = d.numpy()
    means = d[np.random.default_rng(seed).integers(0, d.size, (rounds, d.size))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def llm_stage(args: argparse.Namespace) -> int:
    """The re-ranker on the best cold-users retriever (and on popularity, when its list is
    better still: a re-ranker can personalise it)."""
    from graphrec.data.graph import load

    graph = graph_file(args)
    ds = load(graph)
    table = cold_users_table(args, graph, ds)
    best = best_cold_user(table)
    if best is None:
        raise SystemExit("no cold-users retriever ran")
    pop = next((r for r in table if r["model"] == "pop" and "ndcg@20" in r), None)
    base = Path(args.work) / ("synthetic" if args.quick else "ml100k") / "cold-users"
    alphas = QUICK["alphas"] if args.quick else ALPHAS
    rows, retrievers = [], []
    for top in [best] + ([pop] if pop and pop["ndcg@20"] > best["ndcg@20"] else []):
        model, fold = top["model"], top.get("fold_in", "mean")
        extra = QUICK["train"] if args.quick and model not in ("content-knn", "graph-filter", "pop") else []
        val_run = train_run(graph, base / "seed1" / model, model, cold_user_split_args(1), extra)
        if "error" in val_run:
            raise SystemExit(f"{model} on the validation draw: {val_run['error']}")
        valid = rerank_eval(Path(val_run["run"]), ds, fold, alphas)
        test = rerank_eval(Path(top["run"]), ds, fold, alphas)
        chosen = max(alphas, key=lambda a: (float(valid[a]["ndcg"].mean()), a))  # ties: more alpha
        retrievers.append({"what": top["what"], "model": model, "fold_in": fold,
                           "ndcg@20": top["ndcg@20"], "candidate_recall": test["candidate_recall"],
                           "users": test["users"], "valid_users": valid["users"],
                           "valid_candidate_recall": valid["candidate_recall"]})
        for a in alphas:
            lo, hi = bootstrap(test[a]["ndcg"] - test[1.0]["ndcg"])
            rows.append({"retriever": top["what"], "alpha": a, "chosen": a == chosen,
                         "valid_ndcg@20": float(valid[a]["ndcg"].mean()),
                         "test_ndcg@20": float(test[a]["ndcg"].mean()),
                         "test_recall@20": float(test[a]["recall"].mean()),
                         "delta_ndcg@20": float((test[a]["ndcg"] - test[1.0]["ndcg"]).mean()),
                         "delta_ci95": [lo, hi]})
            print(json.dumps(rows[-1]), flush=True)
    write(args, "llm-stage", meta(args, "llm-stage", retrievers=retrievers), rows)
    return 0


def render_llm_stage(info: dict[str, Any], all_rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## The semantic re-ranker on new users (`--llm-stage`)", "",
             f"`{info['command']}` at commit {info['commit']}. The retriever's top {N} "
             "candidates per cold user, scored from the 5 onboarding items (those excluded), "
             f"re-ranked to {K} by `alpha * minmax(score) + (1 - alpha) * minmax(cos(text_emb, "
             "mean text_emb of the onboarding items))` (graphrec.serve.semantic). alpha chosen "
             "on the seed-1 draw (the retriever's own run there), reported on the seed-0 test; "
             "Δ against alpha = 1 with a 95% paired bootstrap interval over users. Retrievers: "
             "the best personalised row of the cold-users table, and popularity too where its "
             "list scores higher (re-ranking by text is then what personalises it)."]
    for ret in info["retrievers"]:
        rows = [r for r in all_rows if r["retriever"] == ret["what"]]
        chosen = next(r for r in rows if r["chosen"])
        base = next(r for r in rows if r["alpha"] == 1.0)
        lines += ["", f"### On {ret['what']}", "",
                  f"NDCG@20 {ret['ndcg@20']:.4f} in the cold-users table; candidate recall@{N} "
                  f"{ret['candidate_recall']:.4f}; {ret['users']} test users, "
                  f"{ret['valid_users']} validation users.", "",
                  f"**Chosen alpha = {chosen['alpha']}: test NDCG@20 {base['test_ndcg@20']:.4f} → "
                  f"{chosen['test_ndcg@20']:.4f} ({chosen['delta_ndcg@20']:+.4f}, 95% CI "
                  f"[{chosen['delta_ci95'][0]:+.4f}, {chosen['delta_ci95'][1]:+.4f}]), Recall@20 "
                  f"{base['test_recall@20']:.4f} → {chosen['test_recall@20']:.4f}.**", "",
                  "| alpha | valid NDCG@20 | test NDCG@20 | Δ NDCG@20 (95% CI) | test Recall@20 |",
                  "|---:|---:|---:|---|---:|"]
        for r in rows:
            lines.append(f"| {r['alpha']} | {r['valid_ndcg@20']:.4f} | {r['test_ndcg@20']:.4f} | "
                         f"{r['delta_ndcg@20']:+.4f} [{r['delta_ci95'][0]:+.4f}, {r['delta_ci95'][1]:+.4f}]"
                         f"{' ← chosen' if r['chosen'] else ''} | {r['test_recall@20']:.4f} |")
    warm = DEFAULT_RESULTS / "semantic_rerank_ml100k.jsonl"
    if warm.exists():
        recs = [json.loads(ln) for ln in warm.read_text().splitlines()]
        w = next((r for r in recs if r.get("chosen")), None)
        b = next((r for r in recs if r.get("alpha") == 1.0), None)
        if w and b:
            lines += ["", "The warm split for comparison (benchmarks/results/semantic_rerank_ml100k.md: "
                      "`graph-filter`, per-user random 80/20, seed 0, alpha and history chosen on "
                      f"validation): alpha = {w['alpha']}, history = {w['history'] or 'all'}, test "
                      f"NDCG@20 {b['test_ndcg@20']:.4f} → {w['test_ndcg@20']:.4f} "
                      f"({w['delta_ndcg@20']:+.4f}, 95% CI [{w['delta_ci95'][0]:+.4f}, "
                      f"{w['delta_ci95'][1]:+.4f}])."]
    return lines


# -- speed -----------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def speed(args: argparse.Namespace) -> int:
    """Encoding throughput, then the new-user latency of two bpr models."""
    import numpy as np
    import torch

    from graphrec.batches import History
    from graphrec.checkpoint import Checkpoint, load_checkpoint
    from graphrec.data.graph import IdMap, load, user_sequences
    from graphrec.models import build_model, model_config
    from graphrec.serve.recommend import recommend_new

    graph = graph_file(args)
    ds = load(graph)
    rows: list[dict[str, Any]] = []
    if not args.quick:
        from graphrec.data.text import encode, item_texts, load_encoder

        torch.set_num_threads(args.threads)
        texts = item_texts(ds, TEXT_COLS)
        encoder = load_encoder()
        encode(encoder, texts, 64)  # warm-up: one full pass
        times = []
        for _ in range(3):
            start = time.perf_counter()
            vecs = encode(encoder, texts, 64)
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        rows.append({"what": "encode", "items": len(texts), "batch": 64,
                     "torch_threads": torch.get_num_threads(), "seconds": times,
                     "items_per_s": len(texts) / med,
                     "max_abs_diff_vs_stored": float((vecs - ds.graph["item"]["text_emb"].float()).abs().max()),
                     "load_avg": load_avg()})
        print(json.dumps(rows[-1]), flush=True)
    n_users = QUICK["users"] if args.quick else 500
    base = Path(args.work) / ("synthetic" if args.quick else "ml100k") / "cold-users"
    res = train_run(graph, base / "seed0" / "bpr", "bpr", cold_user_split_args(0),
                    QUICK["train"] if args.quick else [])
    if "error" in res:
        raise SystemExit(f"bpr: {res['error']}")
    small = load_checkpoint(res["run"])
    gen = torch.Generator().manual_seed(0)
    ptr, seq = user_sequences(ds.graph)
    drawn = torch.randint(0, ds.num_users, (n_users,), generator=gen)
    real = [seq[ptr[u]:ptr[u] + 5] for u in drawn.tolist()]  # each user's first 5 items
    n_u, n_i = QUICK["big"] if args.quick else (29858, 40981)
    torch.manual_seed(0)
    big = Checkpoint("bpr", build_model("bpr", n_u, n_i, model_config("bpr", {"dim": 64})).eval(),
                     IdMap(np.arange(n_u)), IdMap(np.arange(n_i)),
                     (torch.zeros(n_u + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long)), None, {})
    fake = [torch.randperm(n_i, generator=gen)[:5] for _ in range(n_users)]
    one = torch.tensor([0, 5])
    for threads in dict.fromkeys((1, args.threads)):
        torch.set_num_threads(threads)
        for name, ckpt, hists in ((f"bpr ml-100k checkpoint ({ds.num_users:,} x {ds.num_items:,})"
                                   if not args.quick else "bpr synthetic checkpoint", small, real),
                                  (f"untrained bpr, {n_u:,} x {n_i:,}" + ("" if args.quick else " (Gowalla-sized)"), big, fake)):
            scorer = ckpt.model.scorer()  # held across requests, as a server holds it
            for fold in ("mean", "ls"):
                for h in hists[:20]:  # warm-up
                    recommend_new(ckpt, History(one, h), K, fold, scorer=scorer)
                lat = []
                for h in hists:
                    start = time.perf_counter()
                    recommend_new(ckpt, History(one, h), K, fold, scorer=scorer)
                    lat.append(time.perf_counter() - start)
                rows.append({"what": "recommend_new", "model": name, "fold_in": fold,
                             "threads": threads, "users": len(hists), "k": K,
                             "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                             "mean_ms": 1000 * sum(lat) / len(lat)})
                print(json.dumps(rows[-1]), flush=True)
    write(args, "speed", meta(args, "speed"), rows)
    return 0


def render_speed(info: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    lines = ["# Cold-start costs", "",
             f"`{info['command']}` at commit {info['commit']}, {info['machine']['cpu']} "
             f"({info['machine']['cores']} cores), load average {info['load_avg']} at the start "
             "(other work was running: a load above 1 per core slows these timings)."]
    enc = next((r for r in rows if r["what"] == "encode"), None)
    if enc:
        s = sorted(enc["seconds"])
        lines += ["", "## Item text encoding", "",
                  f"The packaged all-MiniLM-L6-v2 (`graphrec.data.text.encode`) over the "
                  f"{enc['items']:,} ml-100k item texts (`movie_title` + `class`), batch "
                  f"{enc['batch']}, torch threads {enc['torch_threads']}; one warm-up pass, then 3 "
                  f"timed: **{enc['items_per_s']:.0f} items/s** (median {s[1]:.1f} s, range "
                  f"{s[0]:.1f}-{s[2]:.1f} s; load average {enc['load_avg']} after). The vectors "
                  f"match the stored `text_emb` to {enc['max_abs_diff_vs_stored']:.1e}."]
    lat = [r for r in rows if r["what"] == "recommend_new"]
    lines += ["", "## New-user latency", "",
              f"`graphrec.serve.recommend.recommend_new` for one user with 5 items, top {K}, the "
              "model's scorer held across calls (as a server holds it), the given items "
              f"excluded; 20 warm-up calls, then p50/p99 over {lat[0]['users']} users (ml-100k: "
              "the first 5 items of users drawn at random; the untrained model: 5 random "
              "items; weights do not change the cost).", "",
              "| model | fold-in | threads | p50 ms | p99 ms | mean ms |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['fold_in']} | {r['threads']} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['mean_ms']:.2f} |" for r in lat]
    return lines


# -- results ---------------------------------------------------------------------------------

RENDER = {"cold-items": render_cold_items, "cold-users": render_cold_users,
          "llm-stage": render_llm_stage}


def write(args: argparse.Namespace, section: str, info: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Replace this section's records in the results file and rewrite its Markdown from every
    section there (each mode writes its own section)."""
    name = "synthetic" if args.quick else "ml100k"
    stem = f"coldstart_{name}" if section in SECTIONS else f"coldstart_speed{'_synthetic' if args.quick else ''}"
    records = [info] + [{"section": section, **r} for r in rows]
    if args.quick and not args.out:
        print("\n".join(render_all(records, section)))
        return
    out = Path(args.out if args.quick else args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.jsonl"
    old = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
    records = [r for r in old if r["section"] != section] + records
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    text = "\n".join(render_all(records, section))
    (out / f"{stem}.md").write_text(text + "\n")
    print(text)


def render_all(records: list[dict[str, Any]], section: str) -> list[str]:
    def parts(sec: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        info = next((r for r in records if r["section"] == sec and r.get("meta")), None)
        return info, [r for r in records if r["section"] == sec and not r.get("meta")]

    if section == "speed":
        return render_speed(*parts("speed"))
    lines = ["# Cold start on ml-100k" if not records[0]["command"].endswith("quick")
             else "# Cold start on synthetic data (--quick)", "",
             "Written by `benchmarks/coldstart.py`, one section per mode; the protocol of each "
             "is in its paragraph and in the script's docstring. Every Recall@20 and NDCG@20 "
             "comes from graphrec's evaluator."]
    for sec in SECTIONS:
        info, rows = parts(sec)
        if info is not None:
            changed = info.get("graphrec_uncommitted")
            lines += [""] + RENDER[sec](info, rows)
            if changed:
                lines += ["", f"(graphrec/ had uncommitted changes by others at this run: "
                          f"{', '.join(changed)}.)"]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    for m in ("cold-items", "cold-users", "llm-stage", "speed", "quick"):
        mode.add_argument(f"--{m}", dest="mode", action="store_const", const=m)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    p.add_argument("--work", default=str(REPO.parent / "runs-cold"),
                   help="where the converted graph and the runs are kept (reused)")
    p.add_argument("--results", default=str(DEFAULT_RESULTS))
    p.add_argument("--out", default=None, help="--quick: write its results to this folder")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    args.quick = args.mode == "quick"
    import_graphrec(args.threads)
    if args.quick:
        start = time.perf_counter()
        for fn in (cold_items, cold_users, llm_stage, speed):
            fn(args)
            print(f"--quick: {fn.__name__} done at {time.perf_counter() - start:.0f} s", flush=True)
        print(f"--quick: {time.perf_counter() - start:.0f} s", flush=True)
        return 0
    return {"cold-items": cold_items, "cold-users": cold_users, "llm-stage": llm_stage,
            "speed": speed}[args.mode](args)


if __name__ == "__main__":
    raise SystemExit(main())
