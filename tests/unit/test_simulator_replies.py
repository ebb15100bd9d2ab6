"""What the simulated model answers: tool-call trigger, schema-generated arguments, stop, JSON, logprobs (pure)."""
import json

import jsonschema
import pytest

from chutes_lb.simulator import openai_format as oa
from chutes_lb.simulator.replies import ChoiceOut, apply_stop, build_choice, find_directive, plan
from chutes_lb.simulator.schema_args import merge_args, value_for

pytestmark = pytest.mark.unit

READ = {"type": "function", "function": {"name": "Read", "parameters": {
    "type": "object", "required": ["file_path"], "additionalProperties": False,
    "properties": {"file_path": {"type": "string", "description": "absolute path"}, "offset": {"type": "integer"},
                   "limit": {"type": "integer", "minimum": 1}}}}}
SHELL = {"type": "function", "function": {"name": "shell", "parameters": {
    "type": "object", "required": ["command"],
    "properties": {"command": {"type": "array", "items": {"type": "string"}}, "workdir": {"type": "string"},
                   "timeout_ms": {"type": "number"}}}}}


def parse(**body):
    body.setdefault("model", "m")
    chat = "prompt" not in body
    if chat:
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return oa.parse_request(json.dumps(body).encode(), chat)


SCHEMAS = [
    {"type": "object", "required": ["a", "b", "c", "d", "e", "f"], "properties": {
        "a": {"type": "string", "enum": ["x", "y"]}, "b": {"type": "integer", "minimum": 3, "maximum": 9},
        "c": {"type": "number", "exclusiveMinimum": 0.5}, "d": {"type": "boolean"},
        "e": {"type": "array", "items": {"type": "string", "minLength": 5}, "minItems": 2},
        "f": {"type": "object", "required": ["g"], "properties": {"g": {"type": ["null", "integer"], "maximum": -2}}}}},
    {"$defs": {"p": {"type": "object", "required": ["q"], "properties": {"q": {"const": 7}}}}, "$ref": "#/$defs/p"},
    {"anyOf": [{"type": "null"}, {"type": "string", "format": "date-time"}]},
    {"allOf": [{"type": "object", "required": ["a"], "properties": {"a": {"type": "string", "maxLength": 2}}},
               {"required": ["b"], "properties": {"b": {"type": "integer", "multipleOf": 5, "minimum": 7}}}]},
    {"type": "string", "format": "email"}, {"type": "integer", "exclusiveMaximum": -3}, {},
    {"type": "object", "properties": {"opt": {"type": "string"}}, "required": ["missing"]},
    READ["function"]["parameters"], SHELL["function"]["parameters"],
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_generated_values_validate(schema):
    for all_props in (False, True):
        jsonschema.validate(value_for(schema, all_properties=all_props), schema)


def test_generated_args_honour_required_types_and_enums():
    v = value_for(SCHEMAS[0])
    assert v["a"] == "x" and v["b"] == 3 and isinstance(v["b"], int) and v["c"] > 0.5 and v["d"] is False
    assert len(v["e"]) == 2 and all(len(s) >= 5 for s in v["e"]) and v["f"]["g"] <= -2
    assert value_for(READ["function"]["parameters"]) == {"file_path": "sim"}  # only the required property
    assert merge_args({"file_path": "sim"}, {"file_path": "/tmp/x", "limit": 3}) == {"file_path": "/tmp/x", "limit": 3}
    assert value_for(None) == {}


def test_directive_parsing():
    assert find_directive("please sim:call Read {\"file_path\": \"/a/b.txt\", \"n\": {\"x\": 1}} and more") == (
        "Read", {"file_path": "/a/b.txt", "n": {"x": 1}})
    assert find_directive("sim:call shell") == ("shell", None)
    assert find_directive("sim:call read {not json") == ("read", None)
    assert find_directive("nothing here") is None


def test_directive_calls_the_named_tool_case_insensitively_with_args_over_defaults():
    p = parse(tools=[SHELL, READ], messages=[{"role": "user", "content": [
        {"type": "text", "text": 'go: sim:call read {"file_path": "/tmp/f.txt"}'}]}])
    pl = plan(p)
    assert (pl.kind, pl.tool_name) == ("tool", "Read") and json.loads(pl.arguments) == {"file_path": "/tmp/f.txt"}
    out = build_choice(pl, 50, None, ("\n",), "call_1")
    assert out.finish == "tool_calls" and json.loads("".join(out.pieces)) == {"file_path": "/tmp/f.txt"}
    codex = plan(parse(tools=[SHELL], messages=[{"role": "user", "content": 'sim:call shell {"command": ["cat", "x"]}'}]))
    assert json.loads(codex.arguments) == {"command": ["cat", "x"]}


def test_tool_choice_forces_a_call():
    named = plan(parse(tools=[SHELL, READ], tool_choice={"type": "function", "function": {"name": "Read"}}))
    assert named.tool_name == "Read"
    jsonschema.validate(json.loads(named.arguments), READ["function"]["parameters"])
    assert plan(parse(tools=[SHELL, READ], tool_choice="required")).tool_name == "shell"  # the first tool
    with_directive = plan(parse(tools=[SHELL, READ], tool_choice="required",
                                messages=[{"role": "user", "content": 'sim:call Read {"file_path": "/x"}'}]))
    assert (with_directive.tool_name, json.loads(with_directive.arguments)) == ("Read", {"file_path": "/x"})
    with pytest.raises(oa.BadRequest) as err:
        plan(parse(tools=[SHELL], tool_choice={"type": "function", "function": {"name": "Write"}}))
    assert err.value.param == "tool_choice"


def test_no_call_without_trigger_or_with_tool_choice_none():
    assert plan(parse(tools=[READ])).kind == "text"
    assert plan(parse(tools=[READ], tool_choice="none", messages=[{"role": "user", "content": "sim:call Read"}])).kind == "text"
    assert plan(parse(messages=[{"role": "user", "content": "sim:call Read"}])).kind == "text"  # no tools offered
    unknown = plan(parse(tools=[READ], messages=[{"role": "user", "content": "sim:call Write"}]))
    assert unknown.kind == "quote" and "no tool named 'Write'" in unknown.text and "Read" in unknown.text


def test_a_tool_result_is_answered_in_text_quoting_it():
    content = "LINE-ONE of the secret file\n" + "x" * 500
    msgs = [{"role": "user", "content": 'sim:call Read {"file_path": "/f"}'},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                   "function": {"name": "Read", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": content}]},
            {"role": "user", "content": "<system-reminder>ignored</system-reminder>"}]
    pl = plan(parse(tools=[READ], messages=msgs))
    assert pl.kind == "quote" and pl.text == "Tool result: " + content[:200]
    out = build_choice(pl, 5, None, (), "")
    assert "".join(out.pieces) == pl.text and out.finish == "stop" and not out.tool_name
    short = build_choice(pl, 5, 3, (), "")
    assert len(short.pieces) == 3 and short.finish == "length"
    # a later assistant turn closes the tool exchange
    assert plan(parse(tools=[READ], messages=msgs + [{"role": "assistant", "content": "done"}, {"role": "user", "content": "hi"}])).kind == "text"


def test_stop_cuts_before_the_first_stop_string():
    pieces = ["The", " quick", " brown", " fox"]
    assert apply_stop(pieces, ("bro",)) == (["The", " quick", " "], True)
    assert apply_stop(pieces, ("zzz", "quick", "The")) == ([], True)  # earliest occurrence wins
    assert apply_stop(pieces, ("ick b",)) == (["The", " qu"], True)  # a stop spanning tokens
    assert apply_stop(pieces, ("\n",)) == (pieces, False)
    out = build_choice(plan(parse(stop="fox")), 20, None, ("fox",))
    assert "".join(out.pieces) == "The quick brown " and out.finish == "stop"
    long = build_choice(plan(parse()), 20, 5, ("dog",))
    assert long.finish == "length" and len(long.pieces) == 5  # the cap comes first


def test_response_format_answers_valid_json():
    obj = build_choice(plan(parse(response_format={"type": "json_object"})), 3, None, ())
    assert isinstance(json.loads("".join(obj.pieces)), dict) and obj.finish == "stop"
    schema = SCHEMAS[0]
    sch = build_choice(plan(parse(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})), 3, None, ())
    jsonschema.validate(json.loads("".join(sch.pieces)), schema)
    legacy = build_choice(plan(parse(prompt="x", response_format={"type": "json_object"})), 3, None, ())
    assert isinstance(json.loads("".join(legacy.pieces)), dict)


def test_request_validation_of_the_new_fields():
    for bad, param in (({"stop": 3}, "stop"), ({"stop": ["a", 1]}, "stop"), ({"response_format": {"type": "xml"}}, "response_format"),
                       ({"response_format": "json"}, "response_format"), ({"logprobs": "yes"}, "logprobs"),
                       ({"top_logprobs": 3}, "top_logprobs"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
                       ({"tool_choice": "always"}, "tool_choice"), ({"tools": [{"type": "function"}]}, "tools[0]"),
                       ({"tool_choice": {"type": "function"}}, "tool_choice")):
        with pytest.raises(oa.BadRequest) as err:
            parse(**bad)
        assert err.value.param == param, bad
    with pytest.raises(oa.BadRequest):
        parse(prompt="x", logprobs=True)
    assert parse(logprobs=True, top_logprobs=2).logprobs == 2 and parse(logprobs=False).logprobs is None
    assert parse(prompt="x", logprobs=0).logprobs == 0 and parse(stop="").stop == ()


def test_logprob_shapes():
    chat = oa.logprob_entries(True, ["The", " quick"], 3)
    assert [e["token"] for e in chat["content"]] == ["The", " quick"]
    e = chat["content"][1]
    assert e["bytes"] == list(b" quick") and e["logprob"] < 0 and len(e["top_logprobs"]) == 3
    assert e["top_logprobs"][0]["token"] == " quick" and all(t["logprob"] <= e["logprob"] for t in e["top_logprobs"])
    assert oa.logprob_entries(True, ["a"], 0)["content"][0]["top_logprobs"] == []
    legacy = oa.logprob_entries(False, ["The", " quick"], 2, offset=10)
    assert legacy["tokens"] == ["The", " quick"] and legacy["text_offset"] == [10, 13]
    assert len(legacy["token_logprobs"]) == 2 and len(legacy["top_logprobs"][0]) == 2
    assert oa.logprob_entries(False, ["a"], 0)["top_logprobs"] is None


def test_usage_and_tool_call_bodies():
    out = ChoiceOut(['{"a"', ': 1}'], "tool_calls", "Read", "call_x")
    body = json.loads(oa.completion_body(True, "id", 1, "m", [out], 100, 64))
    msg = body["choices"][0]["message"]
    assert msg["content"] is None and msg["tool_calls"][0]["function"] == {"name": "Read", "arguments": '{"a": 1}'}
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"] == {"prompt_tokens": 100, "completion_tokens": 2, "total_tokens": 102, "prompt_tokens_details": {"cached_tokens": 64}}
    first = oa.tool_call_deltas(0, out, None)["delta"]["tool_calls"][0]
    assert first["id"] == "call_x" and first["function"] == {"name": "Read", "arguments": ""} and first["type"] == "function"
    assert oa.tool_call_deltas(0, out, 1)["delta"]["tool_calls"][0] == {"index": 0, "function": {"arguments": ": 1}"}}


def test_context_error_body_is_vllms():
    body = json.loads(oa.context_error_body(1000, 900, 200))
    assert body == {"object": "error", "type": "BadRequestError", "param": None, "code": 400, "message":
                    "This model's maximum context length is 1000 tokens. However, you requested 1100 tokens (900 in the "
                    "messages, 200 in the completion). Please reduce the length of the messages or completion."}
    assert "requested 1200 tokens in the messages" in json.loads(oa.context_error_body(1000, 1200, None))["message"]
