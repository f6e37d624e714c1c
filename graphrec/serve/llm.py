"""Re-ranking by a large language model: one chat prompt per user, listing the user's recent
titles and the candidates, answered with a JSON ranking and a reason for each pick.

Three parts, usable alone:

* :func:`build_prompt` lays out the chat messages (:data:`SYSTEM_PROMPT`,
  :data:`USER_TEMPLATE`). Candidates are shown as ``[id] title``; :class:`LLMReranker` uses
  their 1-based positions in the upstream order as ids (RankGPT's identifiers: short, never
  confused with a title, mapped back to a position without a table).
* :class:`ChatClient` posts to any OpenAI-compatible ``/v1/chat/completions`` endpoint (a local
  llama.cpp ``llama-server``, vLLM, Ollama's OpenAI-compatible API) with the standard library
  only. Configuration from arguments, else the environment:

  ``GRAPHREC_LLM_URL``
      the server: ``http://127.0.0.1:8080`` (llama.cpp), ``http://127.0.0.1:8000/v1`` (vLLM),
      ``http://127.0.0.1:11434/v1`` (Ollama) or the full ``.../v1/chat/completions`` URL.
  ``GRAPHREC_LLM_MODEL``
      the model name the server serves (vLLM's ``--served-model-name``, an Ollama tag; any name
      for llama.cpp, which serves one model).
  ``GRAPHREC_LLM_API_KEY``
      optional, sent as ``Authorization: Bearer KEY``.

* :func:`parse_ranking` maps the answer back to candidate ids (rules in its docstring).

:meth:`LLMReranker.rerank` never raises for a failed request: a timeout, a refused connection,
an HTTP error or an answer without one valid candidate id leaves that user's candidates in
their input (upstream) order, with a :class:`LLMFallbackWarning` naming the cause.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from graphrec.batches import History
from graphrec.errors import GraphrecError

log = logging.getLogger("graphrec.serve.llm")

ENV_URL, ENV_MODEL, ENV_KEY = "GRAPHREC_LLM_URL", "GRAPHREC_LLM_MODEL", "GRAPHREC_LLM_API_KEY"

#: the system message
SYSTEM_PROMPT = ("You are a recommender system. You rank candidate items for one user from the "
                 "user's recent items, and you answer with JSON only.")
#: the user message; ``{history}``, ``{profile}``, ``{candidates}``, ``{k}`` are filled by
#: :func:`build_prompt` (``{profile}`` is empty or one ``User profile: ...`` line)
USER_TEMPLATE = """The user recently watched (oldest first, most recent last):
{history}
{profile}
Candidates:
{candidates}

Return the top {k} candidates for this user, best first, as JSON in exactly this form:
{{"ranking": [{{"id": "<candidate id>", "reason": "<one short sentence why this user would like it>"}}]}}
Use only ids from the candidate list, each at most once, and give a reason for each pick."""
#: what an empty history reads as
NO_HISTORY = "(nothing yet)"
#: how many history titles a prompt shows by default (the most recent ones)
MAX_HISTORY = 20
#: the largest answer read from a server, in bytes
MAX_RESPONSE_BYTES = 4 << 20


def _line(text: Any) -> str:
    """One line of prompt text: newlines and runs of spaces in titles would break the layout."""
    return " ".join(str(text).split())


def build_prompt(history_titles: Sequence[str], candidates: Sequence[tuple[str, str]],
                 profile: str | None = None, k: int = 10,
                 max_history: int = MAX_HISTORY) -> list[dict[str, str]]:
    """The chat messages ``[{"role": "system", ...}, {"role": "user", ...}]`` for one user.

    Args:
        history_titles: the user's items, oldest first; the last ``max_history`` are numbered
            ``1.``, ``2.``, ... (most recent last).
        candidates: ``(id, title)`` pairs in the order shown, one ``[id] title`` line each.
        profile: an optional ``User profile: ...`` line (e.g. ``"age 24, technician"``).
        k: how many picks the answer should rank.
        max_history: at most this many history titles (``0``: all).

    The text is :data:`SYSTEM_PROMPT` and :data:`USER_TEMPLATE`, filled in.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise GraphrecError(f"build_prompt: k must be a positive integer, got {k!r}")
    if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 0:
        raise GraphrecError(f"build_prompt: max_history must be an integer >= 0, got {max_history!r}")
    recent = list(history_titles)[-max_history:] if max_history else list(history_titles)
    history = "\n".join(f"{i}. {_line(t)}" for i, t in enumerate(recent, 1)) or NO_HISTORY
    prof = f"User profile: {_line(profile)}\n" if profile and profile.strip() else ""
    cands = "\n".join(f"[{_line(i)}] {_line(t)}" for i, t in candidates)
    user = USER_TEMPLATE.format(history=history, profile=prof, candidates=cands, k=k)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------------------------
# The client


class LLMError(GraphrecError):
    """A chat request that did not give an answer; the message is the cause, one line."""


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _endpoint(url: str) -> str:
    """``url`` made a ``.../v1/chat/completions`` URL: a bare server or a ``/v1`` base gets the
    rest appended, a full endpoint is kept."""
    base = url.strip().rstrip("/")
    parsed = urllib.parse.urlparse(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise GraphrecError(f"{ENV_URL}: expected an http(s) URL such as http://127.0.0.1:8080, "
                            f"got {url!r}")
    if base.endswith("/chat/completions"):
        return base
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


class ChatClient:
    r"""A client of an OpenAI-compatible chat-completions endpoint, standard library only.

    Each :meth:`chat` is one ``POST {model, messages, temperature: 0}``; the answer is the
    first choice's ``message.content``. Loopback servers are reached directly, other hosts
    through the environment's proxies (``https_proxy``, ``no_proxy``).

    Args:
        url: the server or endpoint (module docstring); ``None``: ``$GRAPHREC_LLM_URL``.
        model: the model name; ``None``: ``$GRAPHREC_LLM_MODEL``.
        api_key: a bearer token; ``None``: ``$GRAPHREC_LLM_API_KEY`` (may be unset).
        timeout: seconds allowed for connecting, for each wait on the server, and for reading
            the whole answer from its first byte: a request ends within about twice
            ``timeout`` at worst (name resolution is not covered).
        max_tokens: the answer's token limit (``None``: the server's default).
        extra: more fields of the request body (``{"response_format": {"type":
            "json_object"}}`` where the server supports it).
    """

    def __init__(self, url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 10.0, max_tokens: int | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        url = url or os.environ.get(ENV_URL)
        model = model or os.environ.get(ENV_MODEL)
        if not url:
            raise GraphrecError(f"LLM re-ranking: no server; pass url or set {ENV_URL} "
                                "(e.g. http://127.0.0.1:8080 for llama.cpp)")
        if not model:
            raise GraphrecError(f"LLM re-ranking: no model name; pass model or set {ENV_MODEL} "
                                "(any name for llama.cpp)")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise GraphrecError(f"LLM re-ranking: timeout must be > 0 seconds, got {timeout!r}")
        self.url, self.model = _endpoint(url), model
        self.api_key = api_key if api_key is not None else os.environ.get(ENV_KEY)
        self.timeout, self.max_tokens, self.extra = float(timeout), max_tokens, dict(extra or {})
        host = urllib.parse.urlparse(self.url).hostname or ""
        # a proxy set for the internet must not swallow a request to this machine
        handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:  # never the key
        return f"ChatClient(url={self.url!r}, model={self.model!r}, timeout={self.timeout})"

    def chat(self, messages: list[dict[str, str]], temperature: float = 0.0) -> str:
        """The answer's text; raises :class:`LLMError` naming the cause."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        body.update(self.extra)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = self._read(resp, deadline)
        except LLMError:
            raise
        except urllib.error.HTTPError as e:
            detail = ""
            try:
                detail = _line(e.read(300).decode("utf-8", "replace"))
            except Exception:  # the body is only a hint
                pass
            raise LLMError(f"HTTP {e.code} from {self.url}" + (f": {detail}" if detail else "")) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise LLMError(f"timeout after {self.timeout:g} s connecting to {self.url}") from None
            raise LLMError(f"cannot reach {self.url}: {reason}") from None
        except (TimeoutError, socket.timeout):
            raise LLMError(f"timeout after {self.timeout:g} s waiting for {self.url}") from None
        except (OSError, ValueError, http.client.HTTPException) as e:  # resets, bad status lines
            raise LLMError(f"request to {self.url} failed: {type(e).__name__}: {_line(e)}") from None
        try:
            data = json.loads(raw)
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(f"not a chat-completions answer from {self.url}: "
                           f"{_line(raw[:200].decode('utf-8', 'replace'))!r}") from None
        if not isinstance(content, str):
            raise LLMError(f"not a chat-completions answer from {self.url}: content is "
                           f"{type(content).__name__}")
        return content

    def _read(self, resp: Any, deadline: float) -> bytes:
        """The body, in chunks: the socket timeout bounds each read, this bounds their sum (a
        server that trickles bytes would otherwise hold a request forever)."""
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = resp.read(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise LLMError(f"answer from {self.url} exceeds {MAX_RESPONSE_BYTES >> 20} MiB")
            chunks.append(chunk)


# --------------------------------------------------------------------------------------------
# The parser


@dataclass
class ParsedRanking:
    """What :func:`parse_answer` read from an answer.

    ``ids``: every candidate id once, the answer's valid picks first in its order, then the
    candidates it left out in their input order; ``reasons``: id -> the answer's reason;
    ``ranked``: how many of ``ids`` came from the answer; ``unknown``: entries matching no
    candidate (dropped); ``duplicates``: repeated picks (dropped); ``source``: ``"json"``,
    ``"list"`` (a plain numbered list) or ``"none"`` (nothing readable)."""

    ids: list[str]
    reasons: dict[str, str] = field(default_factory=dict)
    ranked: int = 0
    unknown: int = 0
    duplicates: int = 0
    source: str = "none"


_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)```", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_BRACKET = re.compile(r"^\[\s*([^\]]+?)\s*\](.*)$", re.DOTALL)
_MARKER = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s*(.*\S)\s*$")
_REASON_SEP = re.compile(r"\s+[-\u2013\u2014]\s+|:\s+|\s+\(")
_ID_KEYS = ("id", "item_id", "item", "candidate", "candidate_id")
_TITLE_KEYS = ("title", "name")
_REASON_KEYS = ("reason", "explanation", "why", "rationale")


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


class _Matcher:
    """Maps an answer's entries to candidate ids (rules 2-4 of :func:`parse_ranking`)."""

    def __init__(self, candidate_ids: Sequence[str], titles: Sequence[str]) -> None:
        self.ids = [str(i) for i in candidate_ids]
        self.known = set(self.ids)
        self.by_title: dict[str, list[str]] = {}
        self.titles = {i: str(t) for i, t in zip(self.ids, titles)}
        for i, t in zip(self.ids, titles):
            self.by_title.setdefault(_norm(str(t)), []).append(i)
        self.picked: list[str] = []
        self.seen: set[str] = set()
        self.reasons: dict[str, str] = {}
        self.unknown = self.duplicates = 0

    def lookup(self, value: Any) -> str | None:
        """The candidate id ``value`` names, or ``None``."""
        if value is None or isinstance(value, (dict, list, bool)):
            return None
        s = str(value).strip().strip("*`\"'").strip()
        if s in self.known:
            return s
        m = _BRACKET.match(s)
        if m and m.group(1) in self.known:
            return m.group(1)
        for text in (s, m.group(2) if m else None):
            if text and (hits := self.by_title.get(_norm(text))):
                # a title shared by several candidates names the first one not yet picked
                return next((i for i in hits if i not in self.seen), hits[0])
        return None

    def add(self, cid: str | None, reason: Any = None) -> None:
        if cid is None:
            self.unknown += 1
        elif cid in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(cid)
            self.picked.append(cid)
            if isinstance(reason, str) and reason.strip():
                self.reasons[cid] = _line(reason)

    def entry(self, e: Any) -> None:
        if isinstance(e, dict):
            keys = {str(key).lower(): v for key, v in e.items()}
            cid = next((c for key in _ID_KEYS if (c := self.lookup(keys.get(key))) is not None), None)
            if cid is None:
                cid = next((c for key in _TITLE_KEYS if (c := self.lookup(keys.get(key))) is not None), None)
            self.add(cid, next((keys[key] for key in _REASON_KEYS if key in keys), None))
        else:
            self.add(self.lookup(e))

    def line(self, text: str) -> None:
        """A list line: ``[id] title`` (the bracketed id decides), the whole line, else its
        head before a reason separator (``" - "``, ``": "``, ``" ("``), trying each separator
        from the left; the text after it is the reason."""
        text = text.strip()
        m = _BRACKET.match(text)
        if m and m.group(1) in self.known:
            cid, rest = m.group(1), m.group(2).strip()
            title = _norm(self.titles[cid])
            reason = next((rest[sep.end():] for sep in _REASON_SEP.finditer(rest)
                           if _norm(rest[:sep.start()].strip("*`\"' ")) == title), None)
            return self.add(cid, reason.rstrip(")").strip() if reason else None)
        if (cid := self.lookup(text)) is not None:
            return self.add(cid)
        for sep in _REASON_SEP.finditer(text):  # each separator: a title may hold ": " itself
            if (cid := self.lookup(text[:sep.start()])) is not None:
                return self.add(cid, text[sep.end():].rstrip(")").strip())
        self.add(None)


def _json_values(text: str) -> list[Any]:
    """JSON values found in ``text``: the fenced blocks, the whole text, else the first object,
    or list of two or more entries, that decodes from an opening ``{`` or ``[`` in prose (a
    one-entry list there is more likely a ``[id]`` of a plain list)."""
    blocks = _FENCE.findall(text) + [text]
    decoder = json.JSONDecoder()
    for block in blocks:
        block = block.strip()
        try:
            return [json.loads(block)]
        except ValueError:
            pass
        for m in list(re.finditer(r"[\[{]", block))[:100]:  # bounded: a long prose answer
            try:
                value, _ = decoder.raw_decode(block, m.start())
            except ValueError:
                continue
            if isinstance(value, dict) or (isinstance(value, list) and len(value) > 1):
                return [value]
    return []


def _entries(value: Any) -> list[Any] | None:
    """The ranked entries of a decoded answer: ``{"ranking": [...]}`` (key case-insensitive),
    else a dict's first list value, or a bare list; ``None`` for anything else."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key, v in value.items():
            if str(key).lower() == "ranking" and isinstance(v, list):
                return v
        return next((v for v in value.values() if isinstance(v, list)), None)
    return None


def parse_answer(text: str | None, candidate_ids: Sequence[str], titles: Sequence[str]) -> ParsedRanking:
    """:func:`parse_ranking` with its counts (:class:`ParsedRanking`)."""
    if len(candidate_ids) != len(titles):
        raise GraphrecError(f"parse_ranking: {len(candidate_ids)} candidate ids but {len(titles)} titles")
    matcher = _Matcher(candidate_ids, titles)
    text = _THINK.sub("", text if isinstance(text, str) else "")
    source = "none"
    for value in _json_values(text):
        entries = _entries(value)
        if entries is not None:
            source = "json"
            for e in entries:
                matcher.entry(e)
            break
    if source == "none":
        lines = [m.group(1) for raw in text.splitlines() if (m := _MARKER.match(raw))]
        lines += [raw.strip() for raw in text.splitlines() if raw.strip().startswith("[")
                  and not _MARKER.match(raw)]
        if lines:
            source = "list"
            for line in lines:
                matcher.line(line)
    rest = [i for i in matcher.ids if i not in matcher.seen]
    return ParsedRanking(matcher.picked + rest, matcher.reasons, len(matcher.picked),
                         matcher.unknown, matcher.duplicates, source)


def parse_ranking(text: str | None, candidate_ids: Sequence[str],
                  titles: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The candidate ids in the answer's order and the answer's reasons (id -> reason).

    Rules, in order:

    1. What is read: ``<think>...</think>`` blocks are dropped; then the first JSON value found
       in a fenced code block (```` ```json ... ``` ````), else in the whole text, else the
       first object (or list of two or more entries) that decodes from an opening ``{`` or
       ``[`` inside prose. Its entries are
       ``{"ranking": [...]}`` (the key case-insensitive), else the first list in the object, or
       a bare list. An entry is an object (id under ``id``/``item_id``/``item``/``candidate``,
       else a title under ``title``/``name``; reason under ``reason``/``explanation``/``why``/
       ``rationale``) or a bare string or number.
    2. An entry names a candidate by its id (stripped of spaces, quotes, ``*`` and backticks),
       by ``[id]`` or ``[id] title``, or by its title: exact after collapsing whitespace,
       case-insensitive. A title several candidates share names the first not yet picked.
    3. Entries naming no candidate are dropped and counted (``unknown``); a candidate named
       again is dropped and counted (``duplicates``): the first mention wins, with its reason.
    4. Candidates the answer leaves out follow the ranked ones, in their input order.
    5. No JSON at all: a plain list is read instead, one entry per line that starts with a
       number (``1.``, ``2)``), a bullet (``-``, ``*``) or ``[id]``; a line names a candidate
       as a whole, else by its head before ``" - "``, ``": "`` or ``" ("`` (the rest is the
       reason).
    6. An answer with nothing readable gives the input order with no ranked entries;
       :class:`LLMReranker` treats any answer with no valid candidate as a failure.

    Args:
        text: the model's answer.
        candidate_ids: the ids shown in the prompt, in input order.
        titles: their titles, aligned with ``candidate_ids``.

    Returns:
        ``(ids, reasons)``: every candidate id exactly once, and the reasons of the picks that
        had one.
    """
    parsed = parse_answer(text, candidate_ids, titles)
    return parsed.ids, parsed.reasons


# --------------------------------------------------------------------------------------------
# The re-ranker


class LLMFallbackWarning(UserWarning):
    """LLM re-ranking failed for some users, who kept their input order."""


@dataclass
class LLMRerankResult:
    """``positions [B, k]`` (-1 pads), per user the ``reasons`` of the picks (``None`` where the
    answer gave none or the user fell back), and ``causes`` (``None``: the LLM ranked the row;
    else why it kept the input order)."""

    positions: Tensor
    reasons: list[list[str | None]]
    causes: list[str | None]


class LLMReranker:
    r"""Re-ranks each user's candidates by a chat model's answer, one request per user.

    A user's top ``max_candidates`` valid candidates in input order (by upstream score, ties to
    the earlier position: the list's own order when, as in a pipeline, it is sorted) are shown
    with ids ``1``, ``2``, ... and their titles, after the user's last ``max_history`` history
    titles (:func:`build_prompt`). The answer is parsed by :func:`parse_answer`; the row's
    positions are the picks, then the candidates not picked in input order. Any failure of one
    user (:class:`LLMError`: timeout, refused connection, HTTP error, not a chat answer; or an
    answer naming no candidate) keeps that user's input order and is reported by one
    :class:`LLMFallbackWarning` per cause. After ``max_failures`` consecutive request failures
    the remaining users of the call are not sent (the server is taken to be down) and fall back
    too. Nothing raises into the caller but bad arguments.

    Args:
        client: anything with ``chat(messages) -> str`` (:class:`ChatClient`).
        titles: ``[num_items]`` item titles, by item index.
        max_history: history titles per prompt (``0``: all).
        max_candidates: candidates per prompt (``0``: all valid ones); the rest keep their
            input order after the re-ranked part.
        workers: concurrent requests (a llama.cpp server with ``--parallel``, vLLM, Ollama
            with ``OLLAMA_NUM_PARALLEL``); 1: one after another.
        max_failures: consecutive request failures after which the call stops sending.
    """

    def __init__(self, client: Any, titles: Sequence[str], max_history: int = MAX_HISTORY,
                 max_candidates: int = 0, workers: int = 1, max_failures: int = 3) -> None:
        for name, v, low in (("max_history", max_history, 0), ("max_candidates", max_candidates, 0),
                             ("workers", workers, 1), ("max_failures", max_failures, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise GraphrecError(f"LLMReranker: {name} must be an integer >= {low}, got {v!r}")
        self.client, self.titles = client, list(titles)
        self.max_history, self.max_candidates = max_history, max_candidates
        self.workers, self.max_failures = workers, max_failures

    def _ask(self, history: list[int], cands: list[int], k: int,
             profile: str | None) -> tuple[list[int], dict[int, str], str | None, bool]:
        """One user: (order over ``cands`` as indices into it, reasons by index, cause or None,
        whether the request itself failed)."""
        ids = [str(j + 1) for j in range(len(cands))]
        names = [self.titles[i] for i in cands]
        messages = build_prompt([self.titles[i] for i in history], list(zip(ids, names)), profile,
                                min(k, len(cands)), self.max_history)
        try:
            answer = self.client.chat(messages)
        except LLMError as e:
            return list(range(len(cands))), {}, str(e), True
        except Exception as e:  # a client of the caller's: whatever it raises is a failure
            return list(range(len(cands))), {}, f"{type(e).__name__}: {_line(e)}", True
        parsed = parse_answer(answer, ids, names)
        if parsed.ranked == 0:
            what = "empty answer" if not answer.strip() else f"no valid candidate id in the answer ({parsed.source})"
            return list(range(len(cands))), {}, what, False
        if parsed.unknown or parsed.duplicates:
            log.debug("LLM answer: %d unknown and %d repeated entries dropped", parsed.unknown,
                      parsed.duplicates)
        order = [int(i) - 1 for i in parsed.ids]
        return order, {int(i) - 1: r for i, r in parsed.reasons.items()}, None, False

    def rerank(self, scores: Tensor, items: Tensor, history: History | Sequence[Sequence[int]],
               k: int, *, mask: Tensor | None = None,
               profiles: Sequence[str | None] | None = None) -> Tensor:
        """Positions ``[B, k]`` into the candidates, ``-1`` where a row has fewer than ``k``
        valid ones (like :func:`graphrec.serve.rerank.mmr`).

        Args:
            scores: ``[B, C]`` upstream scores; non-finite ones (``-inf`` padding) are invalid.
            items: ``[B, C]`` candidate item indices (``-1``: a pad, invalid).
            history: the users' items, oldest first: a :class:`~graphrec.batches.History` of
                ``B`` rows or ``B`` lists of item indices.
            k: list length.
            mask: optional ``[B, C]`` bool, ``False`` marks invalid candidates.
            profiles: optional ``B`` profile lines for the prompts.
        """
        return self.rerank_explained(scores, items, history, k, mask=mask, profiles=profiles).positions

    def rerank_explained(self, scores: Tensor, items: Tensor, history: History | Sequence[Sequence[int]],
                         k: int, *, mask: Tensor | None = None,
                         profiles: Sequence[str | None] | None = None) -> LLMRerankResult:
        """:meth:`rerank` with the reasons of the picks and the fallback causes."""
        if scores.dim() != 2 or items.shape != scores.shape:
            raise GraphrecError(f"LLMReranker: scores and items must both be [B, C], got "
                                f"{list(scores.shape)} and {list(items.shape)}")
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise GraphrecError(f"LLMReranker: k must be a positive integer, got {k!r}")
        B, C = scores.shape
        if isinstance(history, History):
            ptr, hist_items = history.ptr.tolist(), history.items.tolist()
            rows = [hist_items[ptr[b]:ptr[b + 1]] for b in range(history.num_rows)]
        else:
            rows = [list(map(int, h)) for h in history]
        if len(rows) != B or (profiles is not None and len(profiles) != B):
            raise GraphrecError(f"LLMReranker: {B} candidate rows but {len(rows)} histories"
                                + ("" if profiles is None else f" and {len(profiles)} profiles"))
        valid = torch.isfinite(scores) & (items >= 0)
        if mask is not None:
            valid &= mask.to(scores.device)
        s = scores.double().masked_fill(~valid, float("-inf"))
        order = torch.argsort(s, dim=1, descending=True, stable=True)  # input order, [B, C]
        n_valid = valid.sum(1).tolist()
        order_l, items_l = order.tolist(), items.tolist()
        shown = [order_l[b][:min(n_valid[b], self.max_candidates or C)] for b in range(B)]
        results: list[tuple[list[int], dict[int, str], str | None, bool] | None] = [None] * B
        todo = [b for b in range(B) if shown[b]]
        failures, stopped = 0, False
        chunk = max(1, self.workers)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="graphrec-llm") if self.workers > 1 else None
        try:
            for s0 in range(0, len(todo), chunk):
                batch = todo[s0:s0 + chunk]
                if stopped:
                    for b in batch:
                        results[b] = (list(range(len(shown[b]))), {}, f"not sent after {failures} "
                                      "consecutive request failures", True)
                    continue
                args = [(rows[b], [items_l[b][p] for p in shown[b]], k,
                         profiles[b] if profiles is not None else None) for b in batch]
                got = list(pool.map(lambda a: self._ask(*a), args)) if pool else [self._ask(*args[0])]
                for b, r in zip(batch, got):
                    results[b] = r
                    failures = failures + 1 if r[3] else 0
                stopped = failures >= self.max_failures
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        out = torch.full((B, k), -1, dtype=torch.long)
        reasons: list[list[str | None]] = []
        causes: list[str | None] = []
        for b in range(B):
            r = results[b]
            sub, why, cause = (r[0], r[1], r[2]) if r is not None else ([], {}, None)
            # the re-ranked part, then the valid candidates beyond max_candidates, as they came
            pos = [shown[b][j] for j in sub] + order_l[b][len(shown[b]):n_valid[b]]
            pos = pos[:k]
            out[b, :len(pos)] = torch.tensor(pos, dtype=torch.long)
            reasons.append([why.get(j) for j in sub[:k]] + [None] * (min(k, len(pos)) - min(k, len(sub))))
            causes.append(cause)
        counts = Counter(c for c in causes if c is not None)
        for cause, n in counts.items():
            warnings.warn(f"LLM re-ranking kept the input order for {n} of {B} users: {cause}",
                          LLMFallbackWarning, stacklevel=3)
        log.info("LLM re-ranking: %d users ranked by the model, %d fell back", B - sum(counts.values()), sum(counts.values()))
        return LLMRerankResult(out.to(scores.device), reasons, causes)


__all__ = ["SYSTEM_PROMPT", "USER_TEMPLATE", "NO_HISTORY", "ENV_URL", "ENV_MODEL", "ENV_KEY",
           "build_prompt", "ChatClient", "LLMError", "ParsedRanking", "parse_answer",
           "parse_ranking", "LLMFallbackWarning", "LLMRerankResult", "LLMReranker"]
