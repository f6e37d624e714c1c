"""The shared harness of graphrec's benchmark scripts: where things are, the machine and the
commit a result belongs to, threads, timing and memory readings of a process.

Every script in ``benchmarks/`` is a thin layer over this module; none imports another
script's helpers. Measurements that must not pollute each other's memory run in child
processes (each script re-invokes itself); the readings here are per process.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_RESULTS = REPO / "benchmarks" / "results"


def import_graphrec(threads: int) -> None:
    """Put the checkout on ``sys.path`` (graphrec need not be installed) and pin the threads."""
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(threads)


def maxrss_mib() -> float:
    """``ru_maxrss`` of this process in MiB (Linux reports KiB, macOS bytes)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def current_rss_mib() -> float | None:
    """Resident set size right now, from ``/proc/self/statm`` (None where that is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so ``ru_maxrss`` afterwards is the peak
    of what follows only. Returns whether that worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def hwm_mib() -> float | None:
    """The peak RSS of this process since the last reset of the mark (``VmHWM``), in MiB.
    Unlike ``ru_maxrss`` it does not keep the peaks of threads that exited before the reset;
    ``None`` where ``/proc`` has no such line."""
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines()
                    if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def load_avg() -> float | None:
    """The 1-minute load average: above the core count, timings are suspect."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def machine_info() -> dict[str, Any]:
    """Processor, cores and memory of this machine."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        mem = kib / (1 << 20)
    except (OSError, StopIteration):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": usable,
            "memory_gib": round(mem, 1), "system": f"{platform.system()} {platform.release()}"}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "uncommitted"


def resolve_gowalla(data: str | None) -> Path:
    """``--data``, else ``$GRAPHREC_DATA``, else ``../shared/data`` beside the checkout; either
    the folder holding ``gowalla/`` or the Gowalla folder itself."""
    base = Path(data or os.environ.get("GRAPHREC_DATA") or DEFAULT_DATA).expanduser()
    return base if (base / "train.txt").exists() else base / "gowalla"
