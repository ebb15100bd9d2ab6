"""What the simulated model answers: text, a tool call, a tool result quoted, JSON (pure).

:func:`plan` decides once per request, from the parsed body; :func:`build_choice` then makes
each choice's output pieces (one piece = one completion token; a stream sends one per chunk)
under ``max_tokens`` and ``stop``.

Tool-call trigger (chat requests that offer ``tools``; documented in simulator/README.md):

1. ``tool_choice`` ``"none"``: never a call.
2. ``tool_choice`` naming a function (``{"type": "function", "function": {"name": X}}``):
   call X; ``"required"``: call the tool the directive names, else the first tool. A named
   function that is not offered is a 400, as on vLLM.
3. Otherwise, if a ``tool`` message came after the last assistant message (the client is
   returning tool results), answer in text: ``Tool result: <first 200 characters>`` of the
   last result, so an agent loop ends and a test can see the content made it through.
4. Otherwise, a directive in the last user message, ``sim:call <ToolName> {json args}``
   (name matched case-insensitively against the offered tools, the JSON object optional),
   calls that tool.

Arguments are generated from the tool's JSON schema (:mod:`schema_args`: required properties,
right types, enums honoured), with the directive's arguments merged over them.
``response_format`` ``json_object`` answers a JSON object, ``json_schema`` a value valid for the
schema; other answers are the fixed word sequence of ``openai_format``. ``stop`` cuts the
output before the first stop string (``finish_reason: "stop"``); tool calls ignore it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from chutes_lb.simulator import openai_format as oa
from chutes_lb.simulator.prompt import text_of
from chutes_lb.simulator.schema_args import merge_args, value_for

__all__ = ["Plan", "ChoiceOut", "plan", "build_choice", "find_directive", "apply_stop", "QUOTE_CHARS"]

QUOTE_CHARS = 200
_DIRECTIVE = re.compile(r"sim:call\s+([^\s{]+)")


@dataclass(frozen=True)
class Plan:
    kind: str  # "text" | "tool" | "quote" | "json"
    text: str = ""  # the fixed answer of "quote" and "json"
    tool_name: str = ""
    arguments: str = ""  # JSON text of the tool call's arguments


@dataclass
class ChoiceOut:
    pieces: list[str]  # content tokens, or argument fragments of a tool call
    finish: str
    tool_name: str = ""
    call_id: str = ""


def _tool_defs(tools: Any) -> list[tuple[str, Any]]:
    out = []
    for t in tools or ():
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out.append((fn["name"], fn.get("parameters")))
    return out


def find_directive(text: str) -> tuple[str, Any] | None:
    """``(tool name, args or None)`` of the first ``sim:call`` in ``text``, else None."""
    m = _DIRECTIVE.search(text)
    if not m:
        return None
    rest = text[m.end():].lstrip()
    args = None
    if rest.startswith("{"):
        try:
            args, _ = json.JSONDecoder().raw_decode(rest)
        except ValueError:
            args = None
    return m.group(1), args


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def _pending_tool_result(messages: list[dict[str, Any]]) -> str | None:
    """Text of the last ``tool`` message after the last assistant message, if any."""
    for m in reversed(messages):
        role = m.get("role")
        if role == "assistant":
            return None
        if role == "tool":
            return text_of(m.get("content"))
    return None


def _forced_name(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else tool_choice.get("name")
        return name if isinstance(name, str) else None
    return None


def _call(name: str, schema: Any, given: Any) -> Plan:
    args = merge_args(value_for(schema) if schema is not None else {}, given)
    return Plan("tool", tool_name=name, arguments=orjson.dumps(args).decode())


def plan(p: oa.Parsed) -> Plan:
    """The kind of answer for this request; raises ``oa.BadRequest`` for a bad ``tool_choice``."""
    rf = p.response_format
    json_plan = None
    if rf is not None and rf.get("type") == "json_object":
        json_plan = Plan("json", text=orjson.dumps({"answer": oa.text_for(12)}).decode())
    elif rf is not None and rf.get("type") == "json_schema":
        js = rf.get("json_schema") or {}
        json_plan = Plan("json", text=orjson.dumps(value_for(js.get("schema", {}), all_properties=True)).decode())
    if not p.chat:
        return json_plan or Plan("text")
    defs = _tool_defs(p.tools)
    choice = p.tool_choice
    result = _pending_tool_result(p.messages)
    quote = None if result is None else Plan("quote", text="Tool result: " + result[:QUOTE_CHARS])
    if defs and choice != "none":
        by_lower = {name.lower(): (name, schema) for name, schema in defs}
        directive = find_directive(_last_user_text(p.messages))
        forced = _forced_name(choice)
        if forced is not None:
            hit = by_lower.get(forced.lower())
            if hit is None:
                raise oa.BadRequest(f"tool_choice names function {forced!r}, which is not in 'tools'", "tool_choice")
            given = directive[1] if directive and directive[0].lower() == forced.lower() else None
            return _call(hit[0], hit[1], given)
        if choice == "required":
            hit = by_lower.get(directive[0].lower()) if directive else None
            name, schema = hit or defs[0]
            return _call(name, schema, directive[1] if hit and directive else None)
        if quote is None and directive:
            hit = by_lower.get(directive[0].lower())
            if hit is not None:
                return _call(hit[0], hit[1], directive[1])
            offered = ", ".join(name for name, _ in defs)
            return json_plan or Plan("quote", text=f"sim: no tool named {directive[0]!r} among the offered tools ({offered})")
    return json_plan or quote or Plan("text")


def _chunks(text: str, size: int = 4) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def apply_stop(pieces: list[str], stops: tuple[str, ...]) -> tuple[list[str], bool]:
    """Cut ``pieces`` before the first occurrence of any stop string; ``(pieces, stopped)``."""
    if not stops:
        return pieces, False
    text = "".join(pieces)
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    if cut < 0:
        return pieces, False
    out, pos = [], 0
    for piece in pieces:
        if pos + len(piece) > cut:
            if cut > pos:
                out.append(piece[: cut - pos])
            break
        out.append(piece)
        pos += len(piece)
    return out, True


def build_choice(pl: Plan, sampled_tokens: int, max_tokens: int | None, stops: tuple[str, ...], call_id: str = "") -> ChoiceOut:
    """One choice's output: ``sampled_tokens`` is the drawn length of a free-text answer."""
    cap = max_tokens or 1 << 30
    if pl.kind == "tool":
        pieces = _chunks(pl.arguments)
        if len(pieces) > cap:
            return ChoiceOut(pieces[:cap], "length", pl.tool_name, call_id)
        return ChoiceOut(pieces, "tool_calls", pl.tool_name, call_id)
    if pl.kind == "text":
        k = max(1, sampled_tokens)
        pieces = oa.tokens_for(min(k, cap))
        finish = "length" if k >= cap else "stop"
    else:
        pieces = _chunks(pl.text)
        finish = "length" if len(pieces) > cap else "stop"
        pieces = pieces[:cap]
    pieces, stopped = apply_stop(pieces, stops)
    return ChoiceOut(pieces, "stop" if stopped else finish)
