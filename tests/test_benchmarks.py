"""The benchmark scripts still run (their --quick versions), so they cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_spine_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "spine.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "spine.jsonl").read_text().splitlines()]
    names = {r["name"] for r in records}
    assert {"convert", "eval_emb", "eval_pop"} <= names
    for r in records:
        if r["name"] != "import_baseline":  # the baseline only measures memory
            assert r["seconds"]["median"] > 0
        assert r["memory_mib"]["peak_rss_mib"] > 0
    assert (tmp_path / "spine.md").read_text().startswith("Spine benchmark")


def test_graph_filter_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "graph_filter.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "graph_filter.jsonl").read_text().splitlines()]
    assert records and (tmp_path / "graph_filter.md").exists()
    recalls = [r["metrics"]["recall@20"] for r in records if "recall@20" in r.get("metrics", {})]
    assert recalls and all(0 <= x <= 1 for x in recalls)


def test_propagation_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "propagation.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in
               (tmp_path / "propagation.jsonl").read_text().splitlines()]
    layers = [r for r in records if r.get("section") == "layer" and r.get("status") == "ok"]
    assert {r["backend"] for r in layers} >= {"graphrec", "torch_csr_autograd"}
    for r in layers:  # every timed backend was checked against the CSR product first
        assert r["check"]["forward"]["max_rel_err"] < 1e-4
        assert r["check"]["gradient"]["max_rel_err"] < 1e-4
        assert r["seconds"]["forward"]["median"] > 0
    assert (tmp_path / "propagation.md").exists()


def test_lightgcn_speed_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lightgcn_speed.py"),
                           "--quick", "--batches", "4", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (rec,) = [json.loads(line) for line in
              (tmp_path / "lightgcn_speed.jsonl").read_text().splitlines()]
    assert rec["check_max_abs_err"] <= 1e-5  # both models propagate to the same embeddings
    for model in ("graphrec", "pyg"):
        assert len(rec["runs"][model]) == 4
        assert rec["summary"][model]["epoch_s_estimate"] > 0
        assert rec["summary"][model]["memory"]["peak_rss_mib"] > 0
    assert (tmp_path / "lightgcn_speed.md").read_text().startswith("LightGCN training speed")


def test_models_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "models.py"), "--quick",
                           "--only", "pop,bpr", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = {r["model"]: r for r in
               (json.loads(line) for line in (tmp_path / "models.jsonl").read_text().splitlines())}
    assert set(records) == {"pop", "bpr"}
    assert records["bpr"]["epochs"] == 2 and records["bpr"]["parameters"] > 0
    for r in records.values():
        assert r["status"] == "ok" and 0 <= r["metrics"]["recall@20"] <= 1
        assert r["peak_rss_mib"] > 0
    assert "| `bpr` |" in (tmp_path / "models.md").read_text()


def test_sequential_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sequential.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "sequential.jsonl").read_text().splitlines()]
    assert {r["model"] for r in records if r["section"] == "throughput"} == {"sasrec", "bert4rec"}
    assert {r["options"]["loss"] for r in records if r["section"] == "softmax"} >= {"ce", "sampled-ce"}
    for r in records:
        assert r["result"]["train"]["sequences_per_s"] > 0
        assert r["result"]["memory"]["rss_before_mib"] > 0
        if r["section"] == "throughput":
            assert r["result"]["eval"]["users_per_s"] > 0
    assert (tmp_path / "sequential.md").read_text().startswith("Sequential benchmark")


def test_gowalla_curve_small(tmp_path):
    """The time-to-quality script on a tiny LightGCN-format folder: train, stop, report."""
    import random

    rng = random.Random(0)
    data = tmp_path / "data"
    data.mkdir()
    items = {u: rng.sample(range(60), 10) for u in range(40)}
    for name, part in (("train.txt", slice(0, 8)), ("test.txt", slice(8, 10))):
        lines = [" ".join(str(v) for v in [u] + items[u][part]) for u in range(40)]
        (data / name).write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    base = [sys.executable, str(ROOT / "benchmarks" / "gowalla_curve.py"), "--model", "bpr",
            "--data", str(data), "--run", str(run), "--tag", "bpr-test"]
    proc = subprocess.run(base + ["--epochs", "2", "--eval-every", "1", "--batch-size", "64",
                                  "--num-negatives", "4", "--threads", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(base + ["--report", "--out", str(tmp_path / "results")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((tmp_path / "results" / "gowalla_curve_bpr-test.jsonl").read_text())
    assert rec["epochs_done"] == 2 and len(rec["curve"]) == 2
    assert rec["settings"]["num_negatives"] == 4
    assert 0 <= rec["best_recall@20"] <= 1
    assert "4 negative(s) per positive" in (tmp_path / "results" / "gowalla_curve_bpr-test.md").read_text()


def test_ann_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ann.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (record,) = [json.loads(line) for line in (tmp_path / "ann.jsonl").read_text().splitlines()]
    rows = {(r["index"], r.get("nprobe"), r.get("ef_search")): r for r in record["rows"]}
    assert {k[0] for k in rows} == {"exact", "flat", "ivf", "ivfpq", "hnsw"}
    for key in (("exact", None, None), ("flat", None, None)):  # exact searches find the truth
        assert rows[key]["recall@10"] == rows[key]["recall@100"] == 1.0
    assert all(0 < r["recall@100"] <= 1 and r["qps_batch1"] > 0 for r in rows.values())
    # more IVF lists probed: never a worse recall
    assert rows[("ivf", 32, None)]["recall@100"] >= rows[("ivf", 8, None)]["recall@100"]
    assert (tmp_path / "ann.md").read_text().startswith("# ANN benchmark")


def test_serve_load_quick(tmp_path):
    import pytest

    for module in ("fastapi", "uvicorn", "httpx"):
        pytest.importorskip(module, reason="the HTTP server needs pip install 'graphrec[serve]'")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (rec,) = [json.loads(line) for line in (tmp_path / "serve_load.jsonl").read_text().splitlines()]
    assert rec["settings"]["requests"] == 200 and rec["unknown_requests"] > 0
    assert rec["non_200"] == 0 and rec["wrong_answers"] == 0  # fallback marked exactly right
    assert 0 < rec["latency_ms"]["p50"] <= rec["latency_ms"]["p99"] and rec["throughput_rps"] > 0
    assert rec["rss_mib"]["start"] > 0 and rec["rss_mib"]["end"] > 0
    assert (tmp_path / "serve_load.md").read_text().startswith("# HTTP serving load")


def test_pipeline_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--quick",
                           "--work", str(tmp_path / "work"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "pipeline_synthetic.jsonl").read_text().splitlines()]
    assert any(r.get("what", "").startswith("pipeline") for r in records)
    assert {r["method"] for r in records if "method" in r} == {"mmr", "dpp"}


def test_coldstart_quick(tmp_path):
    import pytest

    pytest.importorskip("lightfm", reason="the LightFM comparison needs pip install lightfm")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "coldstart.py"), "--quick",
                           "--work", str(tmp_path / "work"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in
               (tmp_path / "coldstart_synthetic.jsonl").read_text().splitlines()]
    rows = [r for r in records if not r.get("meta")]
    assert {r["section"] for r in records} == {"cold-items", "cold-users", "llm-stage"}
    items = {r["model"]: r for r in rows if r["section"] == "cold-items" and "ndcg@20" in r}
    assert {"content-knn", "two-tower", "random", "oracle-pop"} <= set(items)
    assert {r["identity"] for r in rows if r.get("model") == "lightfm"} == {True, False}
    users = {r["users"] for r in items.values()}
    assert len(users) == 1  # every row ranks the same cold items for the same users
    folds = [r for r in rows if r.get("fold_in")]
    assert {r["fold_in"] for r in folds} == {"mean", "ls"} and sum(r["headline"] for r in folds) == 1
    assert all(r["check_mean_vs_run"] < 1e-6 for r in folds)  # the checkpoint reproduces the run
    for r in rows:
        for key in ("recall@20", "ndcg@20", "test_ndcg@20"):
            if key in r:
                assert 0 <= r[key] <= 1
    stage = [r for r in rows if r["section"] == "llm-stage"]
    assert sum(r["chosen"] for r in stage) == 1
    assert next(r for r in stage if r["alpha"] == 1.0)["delta_ndcg@20"] == 0
    speed = [json.loads(line) for line in
             (tmp_path / "coldstart_speed_synthetic.jsonl").read_text().splitlines()]
    lat = [r for r in speed if r.get("what") == "recommend_new"]
    assert {r["fold_in"] for r in lat} == {"mean", "ls"}
    assert all(0 < r["p50_ms"] <= r["p99_ms"] for r in lat)
    assert (tmp_path / "coldstart_synthetic.md").read_text().startswith("# Cold start")


def test_implicit_peers_quick(tmp_path):
    pytest.importorskip("implicit")  # a benchmark-only peer (.[peers])
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "implicit_peers.py"),
                           "--quick", "--sections", "als-defaults", "bpr-defaults", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "implicit_peers.jsonl").read_text().splitlines()]
    pairs = {(r["section"], r["library"], r["model"], r["setting"]) for r in rows}
    assert {("als-defaults", "implicit", "AlternatingLeastSquares", "implicit defaults"),
            ("als-defaults", "graphrec", "ials", "implicit's settings"),
            ("bpr-defaults", "implicit", "BayesianPersonalizedRanking", "implicit defaults"),
            ("bpr-defaults", "graphrec", "bpr", "graphrec defaults")} <= pairs
    for r in rows:
        assert 0 <= r["metrics"]["ndcg@20"] <= 1 and r["fit_s"] > 0 and r["threads"] == 2
    # at the same settings graphrec ials ranks about as well as implicit ALS
    als = {r["library"]: r["metrics"]["recall@20"] for r in rows
           if r["setting"] in ("implicit defaults", "implicit's settings")
           and r["section"] == "als-defaults"}
    assert als["graphrec"] > 0.8 * als["implicit"]
    md = (tmp_path / "implicit_peers.md").read_text()
    assert "graphrec/implicit" in md and "## bpr-defaults" in md


def test_surprise_peers_quick(tmp_path):
    pytest.importorskip("surprise")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "surprise_peers.py"),
                           "--quick", "--only", "BaselineOnly,SVD,baseline-only,svd",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = {(r["library"], r["model"]): r for r in
               (json.loads(line) for line in
                (tmp_path / "surprise_peers.jsonl").read_text().splitlines())}
    assert set(records) == {("surprise", "BaselineOnly"), ("surprise", "SVD"),
                            ("graphrec", "baseline-only"), ("graphrec", "svd")}
    fingerprints = {r["fold_fingerprint"] for r in records.values()}
    assert len(fingerprints) == 1  # both libraries saw the same folds
    for r in records.values():
        assert r["status"] == "ok" and len(r["folds"]) == 2
        assert 0 < r["summary"]["rmse"]["mean"] < 2 and r["summary"]["fit_cpu_s_median"] >= 0
    # the same ALS on the same folds: graphrec's baseline-only equals Surprise's BaselineOnly
    assert abs(records["graphrec", "baseline-only"]["summary"]["rmse"]["mean"]
               - records["surprise", "BaselineOnly"]["summary"]["rmse"]["mean"]) < 1e-6
    text = (tmp_path / "surprise_peers.md").read_text()
    assert text.startswith("Surprise peers") and "| `BaselineOnly` |" in text
