"""The HTTP server (graphrec/serve/http.py) on a real uvicorn over loopback, queried with httpx."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

SKIP = "graphrec serve needs fastapi, uvicorn and httpx: pip install 'graphrec[serve]'"
pytest.importorskip("fastapi", reason=SKIP)
pytest.importorskip("uvicorn", reason=SKIP)
httpx = pytest.importorskip("httpx", reason=SKIP)

from graphrec.checkpoint import load_checkpoint  # noqa: E402
from graphrec.errors import GraphrecError  # noqa: E402
from graphrec.serve.http import RunService, Service, ServerThread  # noqa: E402
from graphrec.serve.recommend import recommend  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
USERS = ["alice", "bob", "carol", "dave", "erin"]  # data/tiny.csv's users


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A bpr run on data/tiny.csv, trained by the command line's own main."""
    from graphrec.train import main

    out = tmp_path_factory.mktemp("http") / "run"
    assert main(["--model", "bpr", "--data", str(ROOT / "data" / "tiny.csv"), "--epochs", "3",
                 "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def server(run_dir):
    service = RunService(run_dir)
    with ServerThread(service) as s:
        with httpx.Client(base_url=s.url, timeout=30) as client:
            yield s, client
    assert not s._thread.is_alive()  # shut down, not left running


def _expected(run_dir: Path, user: str, k: int, **kw) -> list:
    """What graphrec.serve.recommend.recommend gives ``user``: raw item ids, best first."""
    ckpt = load_checkpoint(run_dir)
    dense = torch.as_tensor(ckpt.users.to_index([user], "user"))
    items, _ = recommend(ckpt, dense, k, **kw)
    return [ckpt.items.raw[i] for i in items[0].tolist() if i >= 0]


def test_run_service_is_a_service(run_dir):
    assert isinstance(RunService(run_dir), Service)


def test_known_users_get_what_recommend_gives(server, run_dir):
    _, client = server
    data = load_checkpoint(run_dir)
    assert sorted(data.users.raw.tolist()) == sorted(USERS)
    for user in USERS:
        for k in (1, 2, 20):
            r = client.get("/recommend", params={"user": user, "k": k})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["user"] == user and body["fallback"] is None
            assert [row["item"] for row in body["items"]] == _expected(run_dir, user, k)
            scores = [row["score"] for row in body["items"]]
            assert scores == sorted(scores, reverse=True)
            assert all(set(row) == {"item", "score", "title"} for row in body["items"])
    # k above the user's unseen items: a shorter list, never a seen item
    seen = {"matrix", "inception", "heat", "alien"}  # alice's items in data/tiny.csv
    items = [row["item"] for row in client.get("/recommend?user=alice&k=1000").json()["items"]]
    assert items and not seen & set(items)


def test_unknown_user_gets_onboarding_marked(server, run_dir):
    _, client = server
    body = client.get("/recommend", params={"user": "nobody-here", "k": 3}).json()
    assert body["user"] == "nobody-here" and body["fallback"] == "onboarding"
    # most-interacted items of data/tiny.csv (no genres: popularity, undiversified), counted by
    # hand from the file
    lines = (ROOT / "data" / "tiny.csv").read_text().splitlines()[1:]
    counts = {}
    for line in lines:
        counts[line.split(",")[1]] = counts.get(line.split(",")[1], 0) + 1
    got = [(row["item"], row["score"]) for row in body["items"]]
    assert [counts[i] for i, _ in got] == sorted(counts.values(), reverse=True)[:3]
    assert all(s == counts[i] for i, s in got)


@pytest.mark.parametrize("query,field", [
    ("user=alice&k=abc", "k"), ("user=alice&k=0", "k"), ("user=alice&k=1001", "k"),
    ("user=alice&k=2.5", "k"), ("k=5", "user"), ("user=&k=5", "user"),
])
def test_malformed_requests_are_422_with_a_message(server, query, field):
    _, client = server
    r = client.get(f"/recommend?{query}")
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(f"{field}: ") and "\n" not in detail


def test_new_user_items_over_http(server, run_dir):
    """A user the run never saw, with items: scored from them (unknown ones dropped and
    listed), the given items left out of the list."""
    _, client = server
    ckpt = load_checkpoint(run_dir)
    given = [str(i) for i in ckpt.items.raw[:2].tolist()]
    body = client.get("/recommend", params={"items": ",".join(given + ["no-such-item"]),
                                            "k": 4}).json()
    assert body["fallback"] is None and body["dropped"] == ["no-such-item"]
    got = [str(r["item"]) for r in body["items"]]
    assert len(got) == 4 and not set(got) & set(given)
    r = client.get("/recommend", params={"items": "no-such-item", "k": 4})
    assert r.status_code == 400 and "none of the 1 items" in r.json()["detail"]


def test_health_ready_info(server, run_dir):
    _, client = server
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    info = client.get("/info").json()
    assert (info["model"], info["users"], info["items"], info["index"]) == ("bpr", 5, 6, "exact")


def test_many_sequential_and_concurrent_requests_never_500(server):
    _, client = server
    queries = [{"user": u, "k": k} for u in USERS + ["ghost", "", " alice"] for k in (1, 3, "x", 0)]
    codes = [client.get("/recommend", params=q).status_code for q in queries * 3]
    assert set(codes) <= {200, 422} and codes.count(200) > 0
    url = server[0].url

    def worker(i: int) -> list[int]:
        with httpx.Client(base_url=url, timeout=30) as c:
            return [c.get("/recommend", params=queries[(i + j) % len(queries)]).status_code
                    for j in range(15)]

    with ThreadPoolExecutor(6) as pool:
        codes = [c for batch in pool.map(worker, range(6)) for c in batch]
    assert set(codes) <= {200, 422} and codes.count(200) > 0


class _Loading:
    """A service still loading, then one whose input check fails: the app's other answers."""

    def __init__(self) -> None:
        self.loaded = False

    def recommend(self, raw_user: str, k: int) -> dict:
        raise GraphrecError(f"user {raw_user!r}: bad input")

    def ready(self) -> bool:
        return self.loaded

    def info(self) -> dict:
        return {"model": "none"}


def test_not_ready_is_503_and_service_errors_are_400():
    service = _Loading()
    with ServerThread(service) as s, httpx.Client(base_url=s.url, timeout=30) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 503
        assert client.get("/recommend?user=a").status_code == 503
        service.loaded = True
        assert client.get("/ready").status_code == 200
        r = client.get("/recommend?user=a")
        assert r.status_code == 400 and r.json() == {"detail": "user 'a': bad input"}


@pytest.fixture(scope="module")
def api_runs(tmp_path_factory):
    """lightgcn (its scorer propagates) and graph-filter (not a retriever) on data/tiny.csv."""
    import graphrec as gr

    parts = gr.split(gr.load(str(ROOT / "data" / "tiny.csv")))
    runs = {}
    for name in ("lightgcn", "graph-filter"):
        runs[name] = tmp_path_factory.mktemp(name)
        gr.save(gr.train(name, parts, epochs=2, progress=False), runs[name] / "model.pt")
    return runs


@pytest.mark.parametrize("model,index,served", [
    ("bpr", "hnsw", "hnsw"), ("lightgcn", "exact", "exact"), ("lightgcn", "hnsw", "hnsw"),
    ("graph-filter", "hnsw", "exact"),
])
def test_every_index_serves_what_recommend_gives(model, index, served, run_dir, api_runs):
    run = run_dir if model == "bpr" else api_runs[model]
    service = RunService(run, index=index)
    assert service.info()["index"] == served
    for _ in range(2):  # the scorer held by the service answers the same the second time
        for user in USERS:
            got = [row["item"] for row in service.recommend(user, 3)["items"]]
            assert got == _expected(run, user, 3, index=index, index_dir=run)


def test_read_only_run_folder_builds_its_index_once_elsewhere(run_dir, monkeypatch):
    import graphrec.serve.http as http

    monkeypatch.setattr(http.os, "access", lambda path, mode: False)  # root can write anywhere
    service = RunService(run_dir, index="hnsw")
    assert service.index_dir != run_dir and (service.index_dir / "index-hnsw.json").exists()
    assert [r["item"] for r in service.recommend("bob", 3)["items"]] == _expected(
        run_dir, "bob", 3, index="hnsw", index_dir=run_dir)


def test_integer_ids_spelled_any_way_the_id_map_accepts(tmp_path):
    import pandas as pd

    import graphrec as gr

    users = [7] * 5 + [8] * 5 + [9] * 5
    frame = pd.DataFrame({"user": users, "item": [100 + (u + j) % 6 for u, j in
                                                  zip(users, list(range(5)) * 3, strict=True)]})
    model = gr.train("bpr", gr.split(gr.from_pandas(frame)), epochs=1, progress=False)
    gr.save(model, tmp_path / "model.pt")
    service = RunService(tmp_path / "model.pt")
    index = {raw: service.dense_user(raw) for raw in ("7", "007", "7.0", " 8 ", "10", "x", "7.5")}
    assert index["7"] == index["007"] == index["7.0"] is not None and index[" 8 "] is not None
    assert index["10"] is None and index["x"] is None and index["7.5"] is None
    body = service.recommend("9", 5)
    assert body["fallback"] is None and all(isinstance(r["item"], int) for r in body["items"])


def test_command_line_errors_are_one_line(tmp_path):
    cases = [(["--pipeline", str(tmp_path / "p.toml")],
              "pipelines are served once graphrec.pipeline lands"),
             (["--run", str(tmp_path / "no-run")], "no-run")]
    try:
        from graphrec.serve.pipeline import PipelineService  # noqa: F401
        cases = cases[1:]  # the pipeline service has landed: its own errors are its tests'
    except ImportError:
        pass
    for argv, message in cases:
        proc = subprocess.run([sys.executable, "-m", "graphrec", "serve"] + argv, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        lines = [line for line in proc.stderr.splitlines() if not line.startswith("INFO:")]
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    # without fastapi: one line naming the extra, before any model is loaded
    code = ("import sys; sys.modules['fastapi'] = None\n"
            "from graphrec.cli import run\nfrom graphrec.serve.__main__ import main\n"
            f"sys.exit(run(main, ['--run', {str(tmp_path)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("error: graphrec serve needs fastapi and uvicorn: "
                                   "pip install 'graphrec[serve]'")
