"""OpenAI wire format of the answers: response bodies, SSE chunks, usage, logprobs (pure).

Free text is a fixed word sequence sliced by token count (precomputed: no per-request work).
Usage always carries ``prompt_tokens_details.cached_tokens`` (the prefix-cache hit), in plain
answers and in the final usage chunk of a stream. Tool calls follow OpenAI's shapes: plain
answers put ``message.tool_calls``; a stream sends one delta with the call's ``id``, ``type`` and
``function.name`` (empty arguments), then the arguments in fragments. Logprobs are fixed
pseudo-values in the right shape: chat ``logprobs.content[]`` entries with ``token``,
``logprob``, ``bytes`` and ``top_logprobs``; legacy completions ``tokens``, ``token_logprobs``,
``top_logprobs`` and ``text_offset``.

Request parsing lives in :mod:`chutes_lb.simulator.openai_request` (re-exported here).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from chutes_lb.simulator.openai_request import NO_TOOLS_BODY, BadRequest, Parsed, context_error_body, error_body, parse_request

if TYPE_CHECKING:
    from chutes_lb.simulator.replies import ChoiceOut

__all__ = ["BadRequest", "Parsed", "parse_request", "error_body", "context_error_body", "NO_TOOLS_BODY", "text_for", "tokens_for",
           "completion_body", "chunk", "delta_choice", "tool_call_deltas", "usage", "logprob_entries"]

_WORDS = ("The quick brown fox jumps over the lazy dog while the simulator streams plausible "
          "tokens to every client that asks politely and some that do not").split()
MAX_TOKENS_TEXT = 65536
_TOKENS = [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(MAX_TOKENS_TEXT)]
_OFFSETS = [0]
for _t in _TOKENS:
    _OFFSETS.append(_OFFSETS[-1] + len(_t))
_TEXT = "".join(_TOKENS)


def text_for(tokens: int) -> str:
    return _TEXT[: _OFFSETS[min(tokens, MAX_TOKENS_TEXT)]]


def token(i: int) -> str:
    return _TOKENS[i % MAX_TOKENS_TEXT] if i < MAX_TOKENS_TEXT else " more"


def tokens_for(k: int) -> list[str]:
    """The first ``k`` tokens of the free text, one string per token."""
    if k <= MAX_TOKENS_TEXT:
        return _TOKENS[:k]
    return _TOKENS + [" more"] * (k - MAX_TOKENS_TEXT)


def usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


# ---------------------------------------------------------------- logprobs
def _lp(i: int, j: int = 0) -> float:
    return -round(0.05 + ((i * 7919) % 97) / 100 + 1.5 * j, 4)


def _alt(i: int, j: int) -> str:
    return " " + _WORDS[(i + 3 * j + 1) % len(_WORDS)]


def logprob_entries(chat: bool, pieces: list[str], top: int, start: int = 0, offset: int = 0) -> Any:
    """The ``logprobs`` object of a choice (or of one stream chunk) holding ``pieces``."""
    if chat:
        content = []
        for i, piece in enumerate(pieces, start):
            tops = [{"token": piece, "logprob": _lp(i), "bytes": list(piece.encode())}]
            tops += [{"token": (a := _alt(i, j)), "logprob": _lp(i, j), "bytes": list(a.encode())} for j in range(1, top)]
            content.append({"token": piece, "logprob": _lp(i), "bytes": list(piece.encode()), "top_logprobs": tops[:top]})
        return {"content": content, "refusal": None}
    offsets, pos = [], offset
    for piece in pieces:
        offsets.append(pos)
        pos += len(piece)
    return {"tokens": list(pieces), "token_logprobs": [_lp(i) for i in range(start, start + len(pieces))],
            "top_logprobs": [{piece: _lp(i), **{_alt(i, j): _lp(i, j) for j in range(1, top)}} for i, piece in enumerate(pieces, start)]
            if top else None,
            "text_offset": offsets}


# ---------------------------------------------------------------- plain answers
def _message(out: "ChoiceOut") -> dict[str, Any]:
    if out.tool_name:
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": out.call_id, "type": "function", "function": {"name": out.tool_name, "arguments": "".join(out.pieces)}}]}
    return {"role": "assistant", "content": "".join(out.pieces), "tool_calls": None}


def completion_body(chat: bool, rid: str, created: int, model: str, outs: "list[ChoiceOut]", prompt_tokens: int,
                    cached_tokens: int = 0, logprobs: int | None = None) -> bytes:
    choices = []
    for i, out in enumerate(outs):
        lp = None if logprobs is None or out.tool_name else logprob_entries(chat, out.pieces, logprobs)
        if chat:
            choices.append({"index": i, "message": _message(out), "logprobs": lp, "finish_reason": out.finish})
        else:
            choices.append({"index": i, "text": "".join(out.pieces), "logprobs": lp, "finish_reason": out.finish})
    return orjson.dumps({"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                         "model": model, "choices": choices,
                         "usage": usage(prompt_tokens, sum(len(o.pieces) for o in outs), cached_tokens)})


# ---------------------------------------------------------------- streams
def chunk(chat: bool, rid: str, created: int, model: str, choices: list[dict[str, Any]], usage_: dict[str, Any] | None = None,
          with_usage_key: bool = True) -> bytes:
    obj: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                           "created": created, "model": model, "choices": choices}
    if with_usage_key:
        obj["usage"] = usage_
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def delta_choice(chat: bool, index: int, content: str | None, finish: str | None, role: bool = False,
                 logprobs: Any = None) -> dict[str, Any]:
    if chat:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if content is not None:
            delta["content"] = content
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    return {"index": index, "text": content or "", "logprobs": logprobs, "finish_reason": finish}


def tool_call_deltas(index: int, out: "ChoiceOut", fragment: int | None) -> dict[str, Any]:
    """The stream delta that opens the call (``fragment`` None) or carries one argument fragment."""
    if fragment is None:
        call = {"index": 0, "id": out.call_id, "type": "function", "function": {"name": out.tool_name, "arguments": ""}}
    else:
        call = {"index": 0, "function": {"arguments": out.pieces[fragment]}}
    return {"index": index, "delta": {"tool_calls": [call]}, "logprobs": None, "finish_reason": None}
