"""HTTP serving under load: ``python -m graphrec.serve`` on a run, queried over loopback.

The server runs as its own process (the command users deploy; its memory is its own and it
does not share the client's GIL), started with ``--log-level warning`` (no access log) and
``OMP_NUM_THREADS=--threads``. After ``/ready`` answers and ``--warmup`` requests, ``--requests``
``GET /recommend?user=...&k=--k`` requests go out from ``--concurrency`` worker threads, each
with its own keep-alive ``httpx`` client, to users drawn at random (seed 0) from the run's
users plus a ``--unknown-share`` of unknown ids (served by the popularity fallback). Latency is
the client's wall-clock time per request; throughput is requests over the wall-clock time of the
whole load. The server's RSS (``VmRSS`` of ``/proc/PID/status``) is read after the warm-up,
every 0.2 s during the load and at the end: a server that keeps nothing per request stays flat.
Every answer is checked: status 200, and ``fallback`` set exactly for the unknown users.

Usage::

    python benchmarks/serve_load.py --run runs/tiny-bpr              # appends
                                  # results/serve_load.jsonl, rewrites results/serve_load.md
    python benchmarks/serve_load.py --run runs/tiny-bpr --index hnsw --concurrency 16
    python benchmarks/serve_load.py --quick     # trains a tiny bpr run on data/tiny.csv, 200
                                                # requests, < 30 s, writes nothing (--out DIR)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_RESULTS, REPO, git_commit, import_graphrec, load_avg, machine_info)

NAME = "serve_load"


def vm_rss_mib(pid: int) -> float | None:
    """``VmRSS`` of process ``pid`` in MiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_tiny(folder: Path) -> Path:
    """A 3-epoch bpr run on data/tiny.csv (``--quick``), by the command line's main, here: the
    client process imports graphrec anyway, for the run's user ids."""
    from graphrec.train import main

    out = folder / "tiny-bpr"
    with contextlib.redirect_stdout(io.StringIO()):
        main(["--model", "bpr", "--data", str(REPO / "data" / "tiny.csv"), "--epochs", "3",
              "--out", str(out), "--no-progress"])
    return out


def known_users(run: Path) -> list[str]:
    """The run's raw user ids, read from its checkpoint's id map."""
    from graphrec.checkpoint import load_checkpoint

    return [str(u) for u in load_checkpoint(run).users.raw.tolist()]


def start_server(args: argparse.Namespace, run: Path, log: Any) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "graphrec.serve", "--run", str(run), "--index", args.index,
           "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(httpx: Any, proc: subprocess.Popen, url: str, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready after {timeout} s")


def load(httpx: Any, url: str, requests: list[tuple[str, bool]], k: int,
         concurrency: int) -> tuple[list[tuple[int, float, bool]], float]:
    """Send ``requests`` (user, known) from ``concurrency`` threads; (status, seconds, answer
    right) per request and the wall-clock seconds of it all."""
    chunks = [requests[i::concurrency] for i in range(concurrency)]

    def worker(chunk: list[tuple[str, bool]]) -> list[tuple[int, float, bool]]:
        out = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for user, known in chunk:
                start = time.perf_counter()
                try:
                    r = client.get("/recommend", params={"user": user, "k": k})
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0  # no answer at all
                seconds = time.perf_counter() - start
                right = status == 200 and (r.json()["fallback"] is None) == known
                out.append((status, seconds, right))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [x for part in pool.map(worker, chunks) for x in part]
    return results, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def bench(args: argparse.Namespace, run: Path) -> dict[str, Any]:
    import httpx

    with tempfile.TemporaryFile("w+") as log:
        proc, url = start_server(args, run, log)
        try:
            users = known_users(run)  # while the server starts
            rng = random.Random(args.seed)
            requests = [(f"unknown-{i}", False) if rng.random() < args.unknown_share
                        else (rng.choice(users), True) for i in range(args.requests)]
            ready_s = wait_ready(httpx, proc, url, args.start_timeout)
            info = httpx.get(url + "/info").json()
            load(httpx, url, [(rng.choice(users), True) for _ in range(args.warmup)], args.k,
                 min(args.concurrency, max(1, args.warmup)))
            rss = [vm_rss_mib(proc.pid)]
            done = threading.Event()

            def sample() -> None:  # the RSS curve during the load
                while not done.wait(0.2):
                    rss.append(vm_rss_mib(proc.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            lb = load_avg()
            results, wall = load(httpx, url, requests, args.k, args.concurrency)
            done.set()
            sampler.join()
            rss.append(vm_rss_mib(proc.pid))
            la = load_avg()
        except BaseException:
            log.seek(0)
            sys.stderr.write(log.read())
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat = [s for _, s, _ in results]
    known = [s for (st, s, _), (_, kn) in zip(results, requests, strict=True) if kn]
    statuses: dict[str, int] = {}
    for st, _, _ in results:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    samples = [r for r in rss if r is not None]
    return {
        "benchmark": NAME, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(), "machine": machine_info(), "load_avg_1m": [lb, la],
        "settings": {"run": str(run), "index": args.index, "k": args.k,
                     "requests": args.requests, "concurrency": args.concurrency,
                     "unknown_share": args.unknown_share, "threads": args.threads,
                     "warmup": args.warmup, "quick": args.quick},
        "server": {"model": info.get("model"), "users": info.get("users"),
                   "items": info.get("items"), "index": info.get("index"),
                   "start_to_ready_s": round(ready_s, 2)},
        "unknown_requests": sum(1 for _, kn in requests if not kn),
        "latency_ms": {"p50": round(1000 * percentile(lat, 50), 3),
                       "p90": round(1000 * percentile(lat, 90), 3),
                       "p99": round(1000 * percentile(lat, 99), 3),
                       "max": round(1000 * max(lat), 3),
                       "known_p50": round(1000 * percentile(known, 50), 3) if known else None},
        "throughput_rps": round(len(results) / wall, 1), "wall_s": round(wall, 3),
        "non_200": sum(1 for st, _, _ in results if st != 200), "statuses": statuses,
        "wrong_answers": sum(1 for st, _, right in results if st == 200 and not right),
        "rss_mib": {"start": round(samples[0], 1), "end": round(samples[-1], 1),
                    "max": round(max(samples), 1), "samples": len(samples)},
    }


def markdown(rec: dict[str, Any]) -> list[str]:
    s, srv, lat, rss = rec["settings"], rec["server"], rec["latency_ms"], rec["rss_mib"]
    m = rec["machine"]
    return [
        f"# HTTP serving load ({rec['timestamp']}, commit {rec['git_commit']})", "",
        f"`python benchmarks/serve_load.py --run {s['run']} --index {s['index']} --requests "
        f"{s['requests']} --concurrency {s['concurrency']}{' --quick' if s['quick'] else ''}` "
        f"on {m.get('cpu', 'CPU')} ({m.get('usable_cores')} usable cores, 1-minute load "
        f"{rec['load_avg_1m'][0]} before, {rec['load_avg_1m'][1]} after); the server is "
        f"`python -m graphrec.serve` in its own process with {s['threads']} OpenMP thread(s), "
        f"the clients {s['concurrency']} threads with keep-alive httpx connections over "
        f"loopback, in another process.", "",
        f"Model `{srv['model']}` ({srv['users']:,} users, {srv['items']:,} items), index "
        f"`{srv['index']}`, k = {s['k']}; {rec['unknown_requests']} of the requests were for "
        f"unknown users (popularity fallback). Server start to ready: "
        f"{srv['start_to_ready_s']} s.", "",
        "| requests | concurrency | p50 ms | p90 ms | p99 ms | max ms | requests/s | non-200 | "
        "wrong answers | RSS start MiB | RSS end MiB | RSS max MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['requests']:,} | {s['concurrency']} | {lat['p50']} | {lat['p90']} | {lat['p99']} "
        f"| {lat['max']} | {rec['throughput_rps']:,} | {rec['non_200']} | "
        f"{rec['wrong_answers']} | {rss['start']} | {rss['end']} | {rss['max']} |", "",
        "Latency is the client's wall-clock time per request (queueing behind the server's "
        "one-request-at-a-time model lock included); RSS is the server's `VmRSS` after the "
        f"warm-up, at the end, and the largest of {rss['samples']} samples.",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", help="a run folder written by graphrec.train")
    p.add_argument("--index", default="exact", help="exact (default), flat, ivf, ivfpq, hnsw")
    p.add_argument("--requests", type=int, default=None, help="requests (default 2,000)")
    p.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    p.add_argument("-k", "--k", type=int, default=20, help="items per request (default 20)")
    p.add_argument("--unknown-share", type=float, default=0.02,
                   help="share of requests for unknown users (default 0.02)")
    p.add_argument("--warmup", type=int, default=50, help="untimed requests first (default 50)")
    p.add_argument("--threads", type=int, default=2, help="the server's OpenMP threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-timeout", type=float, default=300.0,
                   help="seconds to wait for /ready (default 300)")
    p.add_argument("--quick", action="store_true",
                   help="train a tiny bpr run on data/tiny.csv, 200 requests; writes nothing")
    p.add_argument("--out", help="results folder (default benchmarks/results; --quick: none)")
    args = p.parse_args(argv)
    if not args.quick and not args.run:
        p.error("give --run RUN (or --quick)")
    if args.requests is None:
        args.requests = 200 if args.quick else 2000
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be at least 1")
    if args.quick:
        args.warmup = min(args.warmup, 20)
    try:
        import httpx  # noqa: F401
    except ImportError:
        p.error("needs httpx, fastapi and uvicorn: pip install 'graphrec[serve]'")
    import_graphrec(args.threads)  # the client's own graphrec: the run's ids, --quick's training
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        run = Path(args.run) if args.run else train_tiny(Path(tmp))
        if not (run / "model.pt").exists() and not run.is_file():
            p.error(f"--run: {run}: not a run folder (no model.pt)")
        rec = bench(args, run)
    print(json.dumps(rec), flush=True)
    out = None if args.quick and not args.out else Path(args.out or DEFAULT_RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{NAME}.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        (out / f"{NAME}.md").write_text("\n".join(markdown(rec)) + "\n")
        print(f"wrote {out / NAME}.md", flush=True)
    return 1 if rec["non_200"] or rec["wrong_answers"] else 0


if __name__ == "__main__":
    sys.exit(main())
