"""Tool calls and client features of the simulator (plain and streamed), driven by the openai SDK."""
from __future__ import annotations

import json
from typing import Iterator

import jsonschema
import openai
import pytest

from chutes_lb.simulator.launch import SimulatorProcess

from sim_fleets import FLEET, TIME_SCALE

pytestmark = pytest.mark.integration
READ = {"type": "function", "function": {"name": "read", "description": "Read a file (OpenCode's tool)", "parameters": {
    "type": "object", "required": ["filePath"], "additionalProperties": False,
    "properties": {"filePath": {"type": "string"}, "offset": {"type": "number"}, "limit": {"type": "number"}}}}}
GREP = {"type": "function", "function": {"name": "Grep", "parameters": {
    "type": "object", "required": ["pattern", "output_mode", "head_limit"],
    "properties": {"pattern": {"type": "string"}, "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]},
                   "head_limit": {"type": "integer", "minimum": 1}, "-i": {"type": "boolean"}}}}}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(FLEET, time_scale=TIME_SCALE, filler_entries=0) as s:
        yield s


@pytest.fixture
def client(sim) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=sim.openai_base, api_key="k", max_retries=0, timeout=10)
    yield c
    c.close()


def _stream_tool_call(client, **kw) -> tuple[str, str, str, list, str]:
    """(id, name, arguments, chunks, finish_reason) of a streamed tool call, rebuilt from the deltas."""
    chunks = list(client.chat.completions.create(model="sim/fast", stream=True, **kw))
    calls = [tc for c in chunks if c.choices and c.choices[0].delta.tool_calls for tc in c.choices[0].delta.tool_calls]
    first = calls[0]
    assert first.id and first.type == "function" and first.function.name and first.function.arguments == ""
    assert all(tc.id is None and tc.function.name is None and tc.index == 0 for tc in calls[1:])
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return first.id, first.function.name, "".join(tc.function.arguments for tc in calls[1:]), chunks, finish[0]


def test_directive_makes_a_plain_tool_call(client):
    r = client.chat.completions.create(model="sim/fast", tools=[GREP, READ], messages=[
        {"role": "system", "content": "You are OpenCode."},
        {"role": "user", "content": 'Look at it. sim:call READ {"filePath": "/tmp/project/notes.txt"}'}])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "read" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert args == {"filePath": "/tmp/project/notes.txt"}
    jsonschema.validate(args, READ["function"]["parameters"])
    assert r.usage.completion_tokens == len(call.function.arguments) // 4 + (len(call.function.arguments) % 4 > 0)


def test_tool_choice_streams_a_call_with_schema_valid_arguments(client):
    call_id, name, arguments, chunks, finish = _stream_tool_call(
        client, tools=[READ, GREP], tool_choice={"type": "function", "function": {"name": "Grep"}},
        messages=[{"role": "user", "content": "find TODOs"}], stream_options={"include_usage": True})
    assert name == "Grep" and finish == "tool_calls" and call_id.startswith("call_")
    args = json.loads(arguments)
    jsonschema.validate(args, GREP["function"]["parameters"])
    assert args["output_mode"] == "content" and args["head_limit"] >= 1
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].usage.completion_tokens > 0
    required = _stream_tool_call(client, tools=[READ], tool_choice="required", messages=[{"role": "user", "content": "x"}])
    assert required[1] == "read" and json.loads(required[2]) == {"filePath": "sim"}


def test_tool_result_is_answered_in_text_quoting_it_plain_and_streamed(client, tmp_path):
    """A whole agent loop: the model asks to read a file, the 'agent' reads it, the answer quotes it."""
    path = tmp_path / "secret.txt"
    path.write_text("CANARY-7f3a: the file content made it through\n" + "more lines\n" * 50)
    messages = [{"role": "user", "content": f"sim:call read {json.dumps({'filePath': str(path)})}"}]
    r = client.chat.completions.create(model="sim/fast", tools=[READ], messages=messages)
    call = r.choices[0].message.tool_calls[0]
    content = open(json.loads(call.function.arguments)["filePath"]).read()  # the agent runs the tool
    messages += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": content}]
    answer = client.chat.completions.create(model="sim/fast", tools=[READ], messages=messages)
    text = answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop" and not answer.choices[0].message.tool_calls
    assert text == "Tool result: " + content[:200] and "CANARY-7f3a" in text
    streamed = client.chat.completions.create(model="sim/fast", tools=[READ], messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text


def test_stop_sequences(client):
    r = client.chat.completions.create(model="sim/fast", messages=[{"role": "user", "content": "x"}], stop=["fox", "dog"])
    assert r.choices[0].message.content == "The quick brown " and r.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model="sim/fast", messages=[{"role": "user", "content": "x"}], stop="own f", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The quick br"
    legacy = client.completions.create(model="sim/fast", prompt="x", stop=["jumps"], max_tokens=20)
    assert legacy.choices[0].text == "The quick brown fox " and legacy.choices[0].finish_reason == "stop"


def test_json_response_formats(client):
    r = client.chat.completions.create(model="sim/fast", messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "population", "tags"],
              "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 1},
                             "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1}}}
    rf = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    chunks = client.chat.completions.create(model="sim/fast", messages=[{"role": "user", "content": "x"}], response_format=rf, stream=True)
    jsonschema.validate(json.loads("".join(c.choices[0].delta.content or "" for c in chunks if c.choices)), schema)


def test_logprobs_shapes(client):
    r = client.chat.completions.create(model="sim/fast", messages=[{"role": "user", "content": "x"}], max_tokens=4, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert [t.token for t in content] == ["The", " quick", " brown", " fox"]
    assert all(t.logprob < 0 and len(t.top_logprobs) == 2 and t.bytes == list(t.token.encode()) for t in content)
    chunks = [c for c in client.chat.completions.create(model="sim/fast", messages=[{"role": "user", "content": "x"}], max_tokens=3,
                                                        logprobs=True, stream=True) if c.choices and c.choices[0].delta.content]
    assert [c.choices[0].logprobs.content[0].token for c in chunks] == ["The", " quick", " brown"]
    legacy = client.completions.create(model="sim/fast", prompt="x", max_tokens=3, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert lp.tokens == ["The", " quick", " brown"] and lp.text_offset == [0, 3, 9] and len(lp.top_logprobs[0]) == 2
    assert all(v < 0 for v in lp.token_logprobs)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="sim/fast", messages=[{"role": "user", "content": "x"}], top_logprobs=2)
    assert err.value.response.json()["error"]["param"] == "top_logprobs"
    assert r.choices[0].message.content == "The quick brown fox"
