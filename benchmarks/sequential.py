"""Sequential-model benchmark: SASRec and BERT4Rec training and evaluation speed, and full versus
sampled softmax as the catalogue grows.

Three parts, each measurement in its own child process (this script re-invoked with
``--child``), so that one measurement's memory never shows in another's peak RSS:

* ``throughput``: ``sasrec`` and ``bert4rec`` at their default settings (``max_len`` 50) and at
  ``max_len`` 200 (the setting the README uses for ml-100k) on ml-100k (leave-one-out split):
  training sequences/second over ``--steps`` (10) optimizer steps of batch 128 (forward, backward,
  Adam step, batches built by :mod:`graphrec.batches`), after ``--warmup`` untimed steps; and
  evaluation users/second, full ranking of all 943 test users (``evaluate(model, split,
  "test")``, median of 3).
* ``softmax``: SASRec (``max_len`` 50, batch 128) on synthetic catalogues of 10^3, 10^4 and 10^5
  items (2,000 users, 15-50 interactions each, ``graphrec.data.synthetic``), loss ``ce`` (full
  softmax over all items) versus ``sampled-ce`` with 1, 128 and 1,024 negatives per window and
  the original ``bce`` (one negative per position): training sequences/second and the peak RSS
  of the training steps (the kernel's peak mark is reset after setup, so the phase peak is what
  training adds on top of the RSS before it).

Every record keeps the machine, torch threads, library versions, git commit, UTC time and the
1-minute load average before and after the child (this is a shared 2-core machine; other work
may be running). The parent imports only the standard library.

Usage::

    python benchmarks/sequential.py            # ml-100k + synthetic (~5-10 minutes); appends
                                               # results/sequential.jsonl, rewrites .md
    python benchmarks/sequential.py --quick    # small synthetic only, in one process, < 1 minute,
                                               # writes nothing
    python benchmarks/sequential.py --quick --out DIR

Threads: 1 by default (``--threads``). On this shared 2-core machine a second OpenMP thread
mostly spins while the other core is busy: the small matrices of these models then ran up to
20 times slower with 2 threads than with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, current_rss_mib, git_commit, import_graphrec, load_avg,
    machine_info, maxrss_mib, reset_peak_rss)

JSONL_NAME, MD_NAME = "sequential.jsonl", "sequential.md"
BATCH = 128


def _data(args: argparse.Namespace, num_items: int | None) -> tuple[Any, Any]:
    """ml-100k (``num_items`` None) or a synthetic catalogue, split leave-one-out."""
    from graphrec.data.graph import build
    from graphrec.data.readers import read
    from graphrec.data.synthetic import SyntheticConfig, make_synthetic
    from graphrec.split import SplitConfig, split

    if num_items is None:
        ds = build(read(Path(args.data) / "ml-100k" / "u.data"))
    else:
        users = 200 if args.quick else 2000
        ds = build(make_synthetic(SyntheticConfig(num_users=users, num_items=num_items,
                                                  num_clusters=10)))
    return ds, split(ds.graph, SplitConfig("leave-one-out"))


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement: train ``--steps`` steps of ``--model`` with ``--options``; maybe evaluate."""
    import_graphrec(args.threads)
    import torch

    from graphrec.batches import make_batches
    from graphrec.evaluation.evaluator import EvalConfig, evaluate
    from graphrec.models import build_model, model_config

    options = json.loads(args.options)
    ds, sp = _data(args, args.items or None)
    torch.manual_seed(0)
    model = build_model(args.model, ds.num_users, ds.num_items, model_config(args.model, options))
    model.fit(sp.train)
    batches = make_batches(model.batch_spec(), sp.train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(batches.num_examples, generator=gen)

    def step(i: int) -> None:
        s = (i * BATCH) % max(1, batches.num_examples - BATCH + 1)
        batch = batches.batch(order[s:s + BATCH], gen)
        loss = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for i in range(args.warmup):
        step(i)
    before = current_rss_mib()
    reset = reset_peak_rss()
    start = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "train": {"steps": args.steps, "batch": BATCH, "seconds": seconds,
                  "sequences_per_s": args.steps * min(BATCH, batches.num_examples) / seconds},
        "memory": {"peak_rss_mib": maxrss_mib() if reset else None, "rss_before_mib": before},
        "info": {"users": ds.num_users, "items": ds.num_items, "examples": batches.num_examples,
                 "threads": torch.get_num_threads(), "torch": torch.__version__},
    }
    if args.evaluate:
        model.eval()
        cfg = EvalConfig(ks=(10, 20), metrics=("ndcg", "hit"), progress=False)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            metrics = evaluate(model, sp, "test", cfg)
            times.append(time.perf_counter() - t0)
        times.sort()
        out["eval"] = {"seconds": times[1], "users": metrics["users"],
                       "users_per_s": metrics["users"] / times[1]}
    return out


def run_child(args: argparse.Namespace, model: str, options: dict[str, Any], items: int,
              steps: int, evaluate: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--model", model,
           "--options", json.dumps(options), "--items", str(items), "--steps", str(steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads), "--data", str(args.data)]
    cmd += ["--evaluate"] if evaluate else []
    cmd += ["--quick"] if args.quick else []
    load = load_avg()
    if args.quick:  # one process: memory figures then include earlier rows, but no start-ups
        sub = argparse.Namespace(**{**vars(args), "model": model, "options": json.dumps(options),
                                    "items": items, "steps": steps, "evaluate": evaluate})
        result = child(sub)
        result["load_avg_1m"] = [load, load_avg()]
        return result
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"child {model} {options} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_avg_1m"] = [load, load_avg()]
    return result


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    ml = (Path(args.data) / "ml-100k" / "u.data").exists() and not args.quick
    if not ml and not args.quick:
        print(f"sequential: no ml-100k under {args.data}; running --quick", file=sys.stderr)
        args.quick = True
    tp_items = 0 if ml else 500
    for model in ("sasrec", "bert4rec"):
        for max_len in ((50, 200) if ml else (50,)):
            rows.append({"section": "throughput", "model": model, "options": {"max_len": max_len},
                         "items": tp_items, "steps": args.steps, "evaluate": True})
    catalogues = (1000,) if args.quick else (1000, 10000, 100000)
    losses = [("ce", None), ("sampled-ce", 1), ("sampled-ce", 128), ("sampled-ce", 1024),
              ("bce", None)]
    if args.quick:
        losses = [("ce", None), ("sampled-ce", 128)]
    for items in catalogues:
        for loss, negatives in losses:
            options: dict[str, Any] = {"loss": loss}
            if negatives:
                options["num_negatives"] = negatives
            rows.append({"section": "softmax", "model": "sasrec", "options": options,
                         "items": items, "steps": max(2, args.steps // 2), "evaluate": False})
    return rows


def markdown(records: list[dict[str, Any]], header: str) -> str:
    lines = [header, ""]
    tp = [r for r in records if r["section"] == "throughput"]
    if tp:
        lines += ["### Training and evaluation throughput", "",
                  "| model | max_len | data | train sequences/s | eval users/s (full ranking) "
                  "| peak RSS of training, MiB | load avg 1m (before, after) |",
                  "|---|---|---|---|---|---|---|"]
        for r in tp:
            res = r["result"]
            data = "ml-100k" if not r["items"] else f"synthetic {r['items']:,} items"
            lines.append(f"| {r['model']} | {r['options']['max_len']} | {data} | "
                         f"{res['train']['sequences_per_s']:,.0f} | "
                         f"{res['eval']['users_per_s']:,.0f} | {res['memory']['peak_rss_mib'] or 0:,.0f} | "
                         f"{res['load_avg_1m'][0]}, {res['load_avg_1m'][1]} |")
        lines.append("")
    sm = [r for r in records if r["section"] == "softmax"]
    if sm:
        items = sorted({r["items"] for r in sm})
        names = list(dict.fromkeys(_loss_name(r["options"]) for r in sm))
        lines += ["### SASRec: full vs sampled softmax as the catalogue grows", "",
                  "Training sequences/s / peak RSS during the training steps, MiB (in brackets: "
                  "what the steps add over the RSS before them, MiB); batch 128, max_len 50.", "",
                  "| loss | " + " | ".join(f"{i:,} items" for i in items) + " |",
                  "|---|" + "---|" * len(items)]
        for name in names:
            cells = []
            for i in items:
                rec = next((r for r in sm if r["items"] == i and _loss_name(r["options"]) == name), None)
                res = rec["result"] if rec else None
                mem = res["memory"] if res else {}
                add = max(0.0, (mem["peak_rss_mib"] or 0) - (mem["rss_before_mib"] or 0))
                cells.append(f"{res['train']['sequences_per_s']:,.0f} / {mem['peak_rss_mib'] or 0:,.0f} "
                             f"(+{add:,.0f})" if res else "–")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        loads = [x for r in sm for x in r["result"]["load_avg_1m"] if x is not None]
        if loads:
            lines += ["", f"1-minute load average during this part: {min(loads)}–{max(loads)}."]
        lines.append("")
    return "\n".join(lines)


def _loss_name(options: dict[str, Any]) -> str:
    if options["loss"] == "sampled-ce":
        n = options["num_negatives"]
        return f"sampled-ce, {n} negative{'s' if n > 1 else ''}"
    return {"ce": "ce (full softmax)", "bce": "bce (1 negative per position)"}[options["loss"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small synthetic data, < 1 minute")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results; "
                                              "--quick writes nothing without it)")
    p.add_argument("--data", default=os.environ.get("GRAPHREC_DATA", str(DEFAULT_DATA)))
    p.add_argument("--steps", type=int, default=None, help="timed training steps (10, softmax rows half; quick 4)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="sasrec", help=argparse.SUPPRESS)
    p.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--items", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 4 if args.quick else 10
    if args.child:
        sys.stdout.write(json.dumps(child(args)) + "\n")
        return 0
    started = time.perf_counter()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = {"timestamp": stamp, "commit": git_commit(), "machine": machine_info(),
              "threads": args.threads, "quick": args.quick}
    records = []
    for row in plan(args):
        result = run_child(args, row["model"], row["options"], row["items"], row["steps"],
                           row["evaluate"])
        rec = {**common, **row, "result": result}
        records.append(rec)
        tr = result["train"]
        print(f"{row['section']:10s} {row['model']:8s} {json.dumps(row['options']):45s} "
              f"items={row['items'] or 'ml-100k'}: {tr['sequences_per_s']:,.0f} seq/s"
              + (f", eval {result['eval']['users_per_s']:,.0f} users/s" if "eval" in result else "")
              + f", peak {result['memory']['peak_rss_mib'] or 0:,.0f} MiB", flush=True)
    m = common["machine"]
    header = (f"Sequential benchmark, {stamp} (commit `{common['commit']}`), whole script "
              f"{time.perf_counter() - started:.0f} s{' (--quick)' if args.quick else ''}.\n\n"
              f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
              f"{m['memory_gib']} GiB RAM, {m['system']}; torch threads {args.threads}; "
              f"torch {records[0]['result']['info']['torch']}. Shared machine: other work was "
              f"running, see the load averages.")
    text = markdown(records, header)
    print(text)
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / JSONL_NAME, "a") as fh:
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
        (out / MD_NAME).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
