"""The Messages and Responses translations: LiteLLM's adapters plus our fixes.

Each fix has two tests: one showing what LiteLLM 1.106.12 does on its own (if a LiteLLM release
fixes it, that test fails and the workaround can go), one showing our translation gets it right."""
from __future__ import annotations

import json

import pytest
from litellm import ModelResponse
from litellm.llms.anthropic.pass_through.adapters.transformation import LiteLLMAnthropicMessagesAdapter
from litellm.responses.litellm_completion_transformation.transformation import LiteLLMCompletionResponsesConfig
from litellm.types.llms.anthropic import AnthropicMessagesRequest

from chutes_lb.proxy.messages import chat_to_messages, messages_to_chat, validate_messages_body
from chutes_lb.proxy.responses import responses_to_chat, validate_responses_body
from chutes_lb.proxy.validation import RequestRejected

pytestmark = pytest.mark.unit

USER = [{"role": "user", "content": "hi"}]
TOOL = {"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}


def raw_litellm(**body) -> dict:
    chat, _ = LiteLLMAnthropicMessagesAdapter().translate_anthropic_to_openai(AnthropicMessagesRequest(**body))
    return dict(chat)


def response(message: dict, finish: str = "stop", **choice) -> ModelResponse:
    return ModelResponse(choices=[{"index": 0, "finish_reason": finish, "message": message, **choice}],
                         usage={"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13,
                                "prompt_tokens_details": {"cached_tokens": 8}})


def test_litellm_forwards_anthropic_only_fields_and_thinking() -> None:
    out = raw_litellm(model="chutes-models", max_tokens=10, messages=USER, container={"id": "x"}, top_k=40,
                      thinking={"type": "enabled", "budget_tokens": 4000})
    assert {"container", "top_k", "reasoning_effort"} <= out.keys()


def test_only_chat_parameters_reach_the_upstream() -> None:
    body = {"model": "claude-x", "max_tokens": 10, "messages": USER, "container": {"id": "x"}, "top_k": 40,
            "thinking": {"type": "enabled", "budget_tokens": 4000}, "context_management": {}, "output_config": {"effort": "high"},
            "service_tier": "auto", "mcp_servers": [{"type": "url", "url": "http://x", "name": "m"}]}
    chat, _ = messages_to_chat(body, "chutes-models")
    assert set(chat) <= {"messages", "max_tokens", "temperature", "top_p", "stop", "tools", "tool_choice", "parallel_tool_calls"}


def test_litellm_keeps_claude_features_for_a_claude_model_name() -> None:
    system = [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]
    out = raw_litellm(model="claude-sonnet-4-5", max_tokens=1, messages=USER, system=system)
    assert "cache_control" in json.dumps(out["messages"][0])


def test_translation_uses_the_group_name_whatever_the_client_calls_the_model() -> None:
    system = [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]
    chat, _ = messages_to_chat({"model": "claude-sonnet-4-5", "max_tokens": 1, "messages": USER, "system": system}, "chutes-models")
    assert "cache_control" not in json.dumps(chat) and chat["messages"][0] == {"role": "system", "content": "x"}


def test_litellm_ignores_disable_parallel_tool_use() -> None:
    out = raw_litellm(model="m", max_tokens=1, messages=USER, tools=[TOOL], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert "parallel_tool_calls" not in out


def test_disable_parallel_tool_use_becomes_parallel_tool_calls_false() -> None:
    chat, _ = messages_to_chat({"model": "m", "max_tokens": 1, "messages": USER, "tools": [TOOL],
                                "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}, "g")
    assert chat["parallel_tool_calls"] is False and chat["tools"][0]["function"]["name"] == "Bash"


def test_system_messages_join_the_prompt_and_server_tools_and_thinking_blocks_are_dropped() -> None:
    body = {"model": "m", "max_tokens": 1, "system": "base", "tools": [
        {**TOOL, "input_schema": {**TOOL["input_schema"], "$schema": "http://json-schema.org/draft-07/schema#"}},
        {"type": "web_search_20250305", "name": "web_search"}],
            "messages": [{"role": "system", "content": "more"}, {"role": "user", "content": "q"},
                         {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                                           {"type": "text", "text": "a"}]},
                         {"role": "user", "content": "q2"}]}
    chat, _ = messages_to_chat(body, "g")
    assert chat["messages"][0] == {"role": "system", "content": "base\n\nmore"}
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "user"]
    assert "hmm" not in json.dumps(chat)
    assert [t["function"]["name"] for t in chat["tools"]] == ["Bash"] and "$schema" not in json.dumps(chat["tools"])


def test_litellm_raises_on_tool_arguments_that_are_not_json() -> None:
    r = response({"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "ls'}}]}, "tool_calls")
    with pytest.raises(ValueError):
        LiteLLMAnthropicMessagesAdapter().translate_openai_response_to_anthropic(response=r)


def test_tool_arguments_that_are_not_json_are_wrapped_not_a_500() -> None:
    r = response({"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "ls'}}]}, "tool_calls")
    out = chat_to_messages(r, {}, "claude-x")
    assert out["stop_reason"] == "tool_use" and out["model"] == "claude-x"
    assert [b["type"] for b in out["content"]] == ["tool_use"]  # and no empty text block before it
    assert out["content"][0]["input"] == {"raw_arguments": '{"command": "ls'}


def test_usage_maps_cached_tokens_and_a_reported_stop_sequence() -> None:
    r = response({"role": "assistant", "content": "done"}, provider_specific_fields={"stop_reason": "END"})
    out = chat_to_messages(r, {}, "claude-x", ["END"])
    assert out["stop_reason"] == "stop_sequence" and out["stop_sequence"] == "END"
    assert out["usage"]["cache_read_input_tokens"] == 8 and out["usage"]["output_tokens"] == 3
    plain = chat_to_messages(response({"role": "assistant", "content": "done"}), {}, "claude-x", ["END"])
    assert plain["stop_reason"] == "end_turn" and plain["stop_sequence"] is None


@pytest.mark.parametrize("raw", [b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}',
                                 b'{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "bogus"}]}]}',
                                 b'{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}'])
def test_messages_bodies_that_anthropic_refuses_are_refused(raw: bytes) -> None:
    with pytest.raises(RequestRejected):
        validate_messages_body(raw)


def test_count_tokens_bodies_need_no_max_tokens() -> None:
    assert validate_messages_body(b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', require_max_tokens=False)


# ------------------------------------------------------------------ Responses
def test_litellm_passes_non_function_tools_to_a_chat_upstream() -> None:
    chat = LiteLLMCompletionResponsesConfig.transform_responses_api_request_to_chat_completion_request(
        model="m", input="hi", responses_api_request={"tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]},
        custom_llm_provider="openai")
    assert chat["tools"][0]["type"] == "file_search"


def test_only_function_tools_reach_the_upstream() -> None:
    body = {"model": "m", "input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs"]}, {"type": "web_search"},
                                                   {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {}}}]}
    chat, _, _ = responses_to_chat(body, "g")
    assert [t["function"]["name"] for t in chat["tools"]] == ["shell"]
    chat, _, _ = responses_to_chat({"model": "m", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "auto"}, "g")
    assert "tools" not in chat and "tool_choice" not in chat


def test_previous_response_id_is_refused_since_nothing_is_stored() -> None:
    with pytest.raises(RequestRejected) as info:
        validate_responses_body(b'{"model": "m", "input": "x", "previous_response_id": "resp_1"}')
    assert info.value.code == "unsupported_parameter" and "input" in info.value.message


def test_responses_items_translate_to_chat_turns() -> None:
    body = {"model": "m", "instructions": "be brief", "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run ls"}]},
        {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": '{"command": ["ls"]}'},
        {"type": "function_call_output", "call_id": "c1", "output": "a.txt"}], "max_output_tokens": 50, "store": False}
    chat, _, _ = responses_to_chat(body, "g")
    roles = [m["role"] for m in chat["messages"]]
    assert roles[0] == "system" and "assistant" in roles and roles[-1] == "tool" and chat["max_tokens"] == 50
