"""Translations that keep Chutes' prefix cache working (proxy/chatform.py): string contents where
every part is text, one system message, no cache_control, tools sorted, and byte-identical
prefixes turn after turn, through the real translations of the Messages and Responses routes."""
from __future__ import annotations

import json

import pytest

from chutes_lb.proxy.chatform import cache_friendly, plain_content
from chutes_lb.proxy.messages import messages_to_chat
from chutes_lb.proxy.responses import responses_to_chat

pytestmark = pytest.mark.unit

SYSTEM = [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}},
          {"type": "text", "text": "Working directory: /repo"}]
TOOLS = [{"name": "Read", "description": "read a file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}},
         {"name": "Bash", "description": "run a command", "input_schema": {"type": "object", "properties": {"cmd": {"type": "string"}}}}]


def anthropic_turns(n: int) -> dict:
    messages: list[dict] = []
    for i in range(n):
        messages.append({"role": "user", "content": [{"type": "text", "text": f"<system-reminder>turn {i}</system-reminder>"},
                                                     {"type": "text", "text": f"step {i}", "cache_control": {"type": "ephemeral"}}]})
        if i < n - 1:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": f"done {i}"}]})
    return {"model": "claude-sonnet-4", "max_tokens": 512, "system": SYSTEM, "messages": messages, "tools": TOOLS}


def responses_turns(n: int) -> dict:
    items: list[dict] = [{"role": "developer", "content": "Follow the repo's rules."}]
    for i in range(n):
        items.append({"role": "user", "content": [{"type": "input_text", "text": f"step {i}"}]})
        if i < n - 1:
            items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": f"done {i}"}]})
    return {"model": "gpt-5-codex", "instructions": "You are Codex.", "input": items}


def _bytes(messages: list) -> list[bytes]:
    return [json.dumps(m, sort_keys=False, separators=(",", ":")).encode() for m in messages]


@pytest.mark.parametrize("translate", ["messages", "responses"])
def test_every_content_is_a_string_and_there_is_one_system_message(translate: str) -> None:
    chat = (messages_to_chat(anthropic_turns(3), "g")[0] if translate == "messages"
            else responses_to_chat(responses_turns(3), "g")[0])
    roles = [m["role"] for m in chat["messages"]]
    assert roles.count("system") == 1 and roles[0] == "system"
    assert all(isinstance(m.get("content"), str) for m in chat["messages"]), chat["messages"]
    assert "cache_control" not in json.dumps(chat)


@pytest.mark.parametrize("translate", ["messages", "responses"])
def test_turn_3_repeats_turn_2_byte_for_byte(translate: str) -> None:
    if translate == "messages":
        two, three = (messages_to_chat(anthropic_turns(n), "g")[0] for n in (2, 3))
    else:
        two, three = (responses_to_chat(responses_turns(n), "g")[0] for n in (2, 3))
    b2, b3 = _bytes(two["messages"]), _bytes(three["messages"])
    assert b3[:len(b2)] == b2  # the whole of turn 2 is the prefix of turn 3
    assert json.dumps(two.get("tools")) == json.dumps(three.get("tools"))


def test_tools_are_sorted_whatever_order_the_client_sends() -> None:
    a = messages_to_chat({**anthropic_turns(1), "tools": TOOLS}, "g")[0]
    b = messages_to_chat({**anthropic_turns(1), "tools": TOOLS[::-1]}, "g")[0]
    assert [t["function"]["name"] for t in a["tools"]] == ["Bash", "Read"] and a["tools"] == b["tools"]


def test_parts_stay_where_they_must() -> None:
    image = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    assert plain_content(image) == image
    assert plain_content([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "a\nb"
    out = cache_friendly({"messages": [{"role": "user", "content": image}]})
    assert out["messages"][0]["content"] == image
