"""``graphrec compare``: the paired tests against scipy and hand formulas, the bootstrap
interval, two real runs through the command line, and the one-line errors."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from scipy import stats

from graphrec import train
from graphrec.cli import main as cli_main, run
from graphrec.compare import bootstrap_sums, compare_runs, paired_tests, percentile_ci
from graphrec.per_user import PER_USER_NAME, load_per_user, save_per_user

A = np.array([0.31, 0.0, 0.52, 0.12, 0.9, 0.05, 0.44, 0.0, 0.27, 0.61, 0.33, 0.18])
B = np.array([0.25, 0.1, 0.40, 0.12, 0.7, 0.00, 0.49, 0.0, 0.11, 0.58, 0.20, 0.09])


def test_paired_t_test_equals_the_hand_formula_and_wilcoxon_equals_scipy():
    t_p, w_p = paired_tests(A, B)
    d = A - B
    n = d.size
    t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
    assert t_p == pytest.approx(2 * stats.t.sf(abs(t), n - 1), rel=1e-10)
    assert t_p == pytest.approx(stats.ttest_rel(A, B).pvalue, rel=1e-12)
    assert w_p == pytest.approx(stats.wilcoxon(A, B).pvalue, rel=1e-12)
    assert 0 < t_p < 0.05  # A is better on this case


def test_wilcoxon_exact_case_by_hand_and_identical_runs():
    # five positive differences of distinct sizes: W- = 0, P(W- = 0) = 1/32 each side
    _, w_p = paired_tests(np.arange(1.0, 6.0) * 2, np.arange(1.0, 6.0))
    assert w_p == pytest.approx(2 / 32)
    assert paired_tests(A, A) == (1.0, 1.0)  # no difference at all


def test_bootstrap_matches_a_loop_over_resamples_and_is_deterministic():
    d = A - B
    R = 300
    sums = bootstrap_sums(d[:, None], R, seed=7)[:, 0]
    # the slow reference: the same draws (one rng, rows of n draws), one resample at a time
    idx = np.random.default_rng(7).integers(0, d.size, size=(R, d.size))
    assert np.allclose(sums, [d[row].sum() for row in idx])
    again = bootstrap_sums(d[:, None], R, seed=7)[:, 0]
    assert np.array_equal(sums, again)
    assert not np.array_equal(sums, bootstrap_sums(d[:, None], R, seed=8)[:, 0])
    lo, hi = percentile_ci(sums / d.size)
    assert lo < d.mean() < hi and lo > 0  # contains the observed difference, excludes 0 here


def test_bootstrap_chunks_give_the_same_draws(monkeypatch):
    import graphrec.compare as compare

    d = (A - B)[:, None]
    whole = bootstrap_sums(d, 50, seed=1)
    monkeypatch.setattr(compare, "CHUNK", 3 * d.shape[0])  # three resamples a chunk
    # the same draws; only the matrix product's summation order may differ in the last bit
    assert np.allclose(whole, bootstrap_sums(d, 50, seed=1), rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two popularity runs that rank alike but predict ratings differently, and a random one."""
    root = tmp_path_factory.mktemp("runs")
    common = ["--no-progress", "--k", "10", "--split-seed", "3"]
    for name, extra in (("pop", []), ("pop0", ["--set", "damping=0"]),
                        ("random", ["--model", "random"])):
        argv = ["--model", "pop", "--out", str(root / name)] + common + extra
        assert run(train.main, argv) == 0
    return root


def test_compare_two_real_runs_through_the_cli(runs, capsys):
    a, b = runs / "pop", runs / "random"
    assert cli_main(["compare", str(a), str(b), "--json", "--resamples", "500"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["metric"]: r for r in out["rows"]}
    metrics_a = json.loads((a / "metrics.json").read_text())
    metrics_b = json.loads((b / "metrics.json").read_text())
    assert set(rows) == {"recall@10", "precision@10", "ndcg@10", "map@10", "hit@10", "mrr@10"}
    for key, r in rows.items():  # A and B are the runs' own figures (per-user values: float32)
        assert r["a"] == pytest.approx(metrics_a[key], rel=1e-5)
        assert r["b"] == pytest.approx(metrics_b[key], rel=1e-5)
        assert r["diff"] == pytest.approx(r["a"] - r["b"])
        assert r["ci_low"] <= r["diff"] <= r["ci_high"]
        assert r["users"] == metrics_a["users"]
    assert rows["ndcg@10"]["t_p"] < 1e-3 and rows["ndcg@10"]["wilcoxon_p"] < 1e-3
    assert rows["ndcg@10"]["ci_low"] > 0  # popularity beats random
    assert cli_main(["compare", str(a), str(b), "--resamples", "200", "--metrics", "ndcg@10"]) == 0
    table = capsys.readouterr().out
    assert "Wilcoxon p" in table and "ndcg@10" in table and "recall@10" not in table


def test_compare_rating_errors_pairs_per_user_rmse(runs):
    a, b = runs / "pop", runs / "pop0"
    rows = {r["metric"]: r for r in compare_runs(a, b, resamples=300, seed=0)}
    metrics_a = json.loads((a / "metrics.json").read_text())
    metrics_b = json.loads((b / "metrics.json").read_text())
    assert rows["rmse"]["a"] == pytest.approx(metrics_a["rmse"], rel=1e-5)
    assert rows["rmse"]["b"] == pytest.approx(metrics_b["rmse"], rel=1e-5)
    assert rows["mae"]["a"] == pytest.approx(metrics_a["mae"], rel=1e-5)
    assert rows["rmse"]["ci_low"] <= rows["rmse"]["diff"] <= rows["rmse"]["ci_high"]
    pa, pb = load_per_user(a), load_per_user(b)
    per_a = pa.errors["se"] / pa.errors["n"]
    per_b = pb.errors["se"] / pb.errors["n"]
    assert rows["rmse"]["t_p"] == pytest.approx(stats.ttest_rel(per_a, per_b).pvalue, rel=1e-9)
    # damping changes the ratings only: the rankings agree, the test says no difference
    assert rows["ndcg@10"]["diff"] == 0 and rows["ndcg@10"]["t_p"] == 1.0


def test_per_user_file_loads_without_pickle_and_is_small(runs):
    path = runs / "pop" / PER_USER_NAME
    with np.load(path, allow_pickle=False) as z:
        assert z["users"].dtype == np.int32 and z["ndcg@10"].dtype == np.float32
        assert z["rating_n"].dtype == np.int32 and str(z["data_fingerprint"])
    assert path.stat().st_size < 60_000  # 1,000 users, 8 columns


def test_compare_errors(runs, tmp_path, capsys):
    def error(argv):
        code = cli_main(["compare"] + [str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        return err

    assert "no such run folder" in error([tmp_path / "nope", runs / "pop"])
    old = tmp_path / "old"
    shutil.copytree(runs / "pop", old)
    (old / PER_USER_NAME).unlink()
    assert "predates per-user metrics" in error([old, runs / "pop"]) and str(old) in error(
        [old, runs / "pop"])
    fewer = tmp_path / "fewer"
    shutil.copytree(runs / "pop", fewer)
    p = load_per_user(fewer)
    keep = slice(1, None)
    p.users, p.values = p.users[keep], {k: v[keep] for k, v in p.values.items()}
    p.errors = {k: v[keep] for k, v in p.errors.items()}
    save_per_user(fewer / PER_USER_NAME, p)
    assert "different test users (1,000 and 999)" in error([runs / "pop", fewer])
    other = tmp_path / "other"
    assert run(train.main, ["--model", "pop", "--out", str(other), "--no-progress",
                            "--split-seed", "4"]) == 0
    capsys.readouterr()
    assert "different test parts" in error([runs / "pop", other])
    tiny = tmp_path / "tiny"
    assert run(train.main, ["--model", "pop", "--data", "data/tiny.csv", "--out", str(tiny),
                            "--no-progress", "--test-ratio", "0.4"]) == 0
    capsys.readouterr()
    assert "ran on different data" in error([runs / "pop", tiny])
    parent = tmp_path / "cv"
    assert run(train.main, ["--model", "pop", "--folds", "2", "--out", str(parent),
                            "--no-progress"]) == 0
    capsys.readouterr()
    assert "is a k-fold parent and" in error([parent, runs / "pop"])


def test_compare_two_kfold_parents_pools_each_user_over_the_folds(tmp_path, capsys):
    for name, model in (("a", "pop"), ("b", "random")):
        assert run(train.main, ["--model", model, "--folds", "2", "--out", str(tmp_path / name),
                                "--no-progress", "--k", "10"]) == 0
    rows = {r["metric"]: r for r in compare_runs(tmp_path / "a", tmp_path / "b", 200)}
    fold_means = [json.loads((tmp_path / "a" / f"fold-{f}" / "metrics.json").read_text())["ndcg@10"]
                  for f in range(2)]
    # every user is in both folds, so the pooled mean is the mean of the fold means
    assert rows["ndcg@10"]["a"] == pytest.approx(np.mean(fold_means), rel=1e-5)
    assert rows["ndcg@10"]["users"] == 1000 and rows["ndcg@10"]["t_p"] < 1e-3


def test_help_answers_without_importing_numpy_or_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom graphrec.cli import main\n"
            "try:\n    main(['compare', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'numpy', 'scipy') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "bootstrap 95% confidence" in proc.stdout and "--resamples" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_compare_needs_no_torch(runs):
    import subprocess
    import sys

    code = ("import sys\nfrom graphrec.compare import compare_runs\n"
            f"compare_runs({str(runs / 'pop')!r}, {str(runs / 'random')!r}, resamples=200)\n"
            "print(sorted(m for m in ('torch', 'torch_geometric') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
