"""Request parsing, admin patch validation and fleet loading of the simulator (pure)."""
import json

import pytest

from chutes_lb.fleet import FleetError
from chutes_lb.simulator import openai_format as oa
from chutes_lb.simulator.faults import ChuteControls, PatchError, apply_chute_patch, validate_utilization_patch
from chutes_lb.simulator.fleet_config import fleet_from_mapping, fleet_from_proxy_config, load_fleet

pytestmark = pytest.mark.unit
MSG = [{"role": "user", "content": "hello world!"}]


def enc(d):
    return json.dumps(d).encode()


def test_parse_accepts_real_client_shapes():
    p = oa.parse_request(enc({"model": "m", "messages": [
        {"role": "system", "content": "x" * 4000},
        {"role": "user", "content": [{"type": "text", "text": "abcd" * 10}, {"type": "image_url", "image_url": {"url": "data:"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "ok"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}], "tool_choice": "auto",
        "response_format": {"type": "json_object"}, "stream": True, "stream_options": {"include_usage": True},
        "n": 2, "stop": ["\n"], "max_completion_tokens": 7, "max_tokens": 99, "temperature": 0.2, "x_unknown": {"a": 1}}), chat=True)
    assert (p.model, p.stream, p.n, p.max_tokens) == ("m", True, 2, 7)
    assert p.prompt_tokens > 1000
    assert oa.parse_request(enc({"model": "m", "messages": MSG, "stream": None, "max_tokens": None}), True).max_tokens is None
    for prompt in ("abc", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        assert oa.parse_request(enc({"model": "m", "prompt": prompt}), chat=False).prompt_tokens >= 1


@pytest.mark.parametrize("raw,chat,param", [
    (b"{not json", True, None), (b"[1,2]", True, None), (b'"str"', True, None),
    (enc({"messages": MSG}), True, "model"), (enc({"model": 3, "messages": MSG}), True, "model"),
    (enc({"model": "m"}), True, "messages"), (enc({"model": "m", "messages": "hi"}), True, "messages"),
    (enc({"model": "m", "messages": []}), True, "messages"), (enc({"model": "m", "messages": ["hi"]}), True, "messages[0]"),
    (enc({"model": "m", "messages": MSG, "stream": "yes"}), True, "stream"),
    (enc({"model": "m", "messages": MSG, "n": 0}), True, "n"), (enc({"model": "m", "messages": MSG, "max_tokens": "5"}), True, "max_tokens"),
    (enc({"model": "m", "messages": MSG, "stream_options": True}), True, "stream_options"),
    (enc({"model": "m", "messages": MSG, "tools": {}}), True, "tools"),
    (enc({"model": "m"}), False, "prompt"), (enc({"model": "m", "prompt": {"a": 1}}), False, "prompt"),
])
def test_parse_rejects_bad_input(raw, chat, param):
    with pytest.raises(oa.BadRequest) as info:
        oa.parse_request(raw, chat)
    assert info.value.param == param and info.value.status == 400
    body = json.loads(oa.error_body(str(info.value), info.value.param))
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["type"] == "invalid_request_error"


def test_text_is_sliced_by_tokens():
    assert oa.text_for(0) == "" and len(oa.text_for(3).split()) == 3
    assert oa.text_for(3) == "".join(oa.token(i) for i in range(3))


def test_chute_patch_validation():
    c = ChuteControls(2, 8)
    new = apply_chute_patch(c, {"instances": 0, "speed": 2, "error_rate": 1, "error_status": 503, "hang": True,
                                "cut_after_tokens": 5, "reset_rate": 0.5, "ttft_scale": 0.5, "concurrency": 3})
    assert new == ChuteControls(0, 3, 2.0, 0.5, 1.0, 503, True, 5, 0.5)
    assert apply_chute_patch(new, {"cut_after_tokens": None}).cut_after_tokens is None
    for bad in ({"instances": -1}, {"instances": 1.5}, {"concurrency": 0}, {"speed": 0}, {"speed": "2"}, {"error_rate": 1.5},
                {"error_status": 200}, {"error_status": 600}, {"hang": 1}, {"cut_after_tokens": -1}, {"reset_rate": -0.1},
                {"unknown": 1}, [1], {"instances": True}, {"speed": float("nan")}):
        with pytest.raises(PatchError):
            apply_chute_patch(c, bad)


def test_utilization_patch_validation():
    assert validate_utilization_patch({"mode": "status"}) == {"mode": "status", "status": 500}
    assert validate_utilization_patch({"mode": "slow", "delay_seconds": 2, "refresh_seconds": 0.5}) == {
        "mode": "slow", "delay_seconds": 2.0, "refresh_seconds": 0.5}
    for bad in ({"mode": "weird"}, {"status": "500"}, {"delay_seconds": -1}, {"size_bytes": -5}, {"refresh_seconds": 0}, {"x": 1}, []):
        with pytest.raises(PatchError):
            validate_utilization_patch(bad)


def test_fleet_from_mapping_with_defaults_and_overrides():
    f = fleet_from_mapping({"alpha": 0.5, "defaults": {"instances": 3, "tps": {"median": 50}},
                            "chutes": [{"chute_id": "2ff25e81-4586-5ec8-b892-3a6f342693d7", "name": "a"},
                                       {"chute_id": "154ad01c-a431-5744-83c8-651215124360", "name": "b", "instances": 0, "ttft": 0.3}]})
    assert f.alpha == 0.5 and [c.instances for c in f.chutes] == [3, 0]
    assert f.chutes[0].tps.median == 50 and f.chutes[1].ttft.median == 0.3 and f.chutes[1].ttft.sigma == 0


@pytest.mark.parametrize("data", [
    {}, {"chutes": []}, {"chutes": [{"chute_id": "nope", "name": "a"}]},
    {"chutes": [{"chute_id": "2ff25e81-4586-5ec8-b892-3a6f342693d7"}]},
    {"chutes": [{"chute_id": "2ff25e81-4586-5ec8-b892-3a6f342693d7", "name": "a", "concurrency": 0}]},
    {"chutes": [{"chute_id": "2ff25e81-4586-5ec8-b892-3a6f342693d7", "name": "a", "tps": {"median": -1}}]},
    {"chutes": [{"chute_id": "2ff25e81-4586-5ec8-b892-3a6f342693d7", "name": "a"}] * 2},
    {"alpha": -1, "chutes": [{"chute_id": "2ff25e81-4586-5ec8-b892-3a6f342693d7", "name": "a"}]},
])
def test_fleet_errors(data):
    with pytest.raises(FleetError):
        fleet_from_mapping(data)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
PROXY_CONFIG = ROOT / "proxy/litellm-config.yaml"


def test_sample_fleets_and_proxy_fallback_load():
    demo = load_fleet(ROOT / "simulator/fleet-demo.yaml", PROXY_CONFIG)
    bench = load_fleet(ROOT / "simulator/fleet-bench.yaml")
    sessions = load_fleet(ROOT / "simulator/fleet-sessions.yaml")
    proxy = fleet_from_proxy_config(PROXY_CONFIG)
    ids = {c.chute_id for c in proxy.chutes}
    assert {c.chute_id for c in demo.chutes} == ids == {c.chute_id for c in bench.chutes} == {c.chute_id for c in sessions.chutes}
    assert all(c.instances == 2 for c in proxy.chutes) and not demo.warnings
    by_name = {c.name: c for c in demo.chutes}
    assert by_name["moonshotai/Kimi-K2.5-TEE"].instances == 3 and by_name["zai-org/GLM-4.6"].context_length == 202752
    assert all(c.concurrency == 8 for c in demo.chutes)  # the config's model_info.concurrency
    assert all(c.prefill_rate > 0 and c.cache_tokens > 0 for c in sessions.chutes)


def _config(tmp_path, chutes):
    import yaml

    path = tmp_path / "litellm-config.yaml"
    path.write_text(yaml.safe_dump({"model_list": [
        {"model_name": "g", "litellm_params": {"model": f"openai/{name}"}, "model_info": {"id": cid, "concurrency": conc}}
        for cid, name, conc in chutes]}))
    return path


A_ID, B_ID, C_ID = "2ff25e81-4586-5ec8-b892-3a6f342693d7", "154ad01c-a431-5744-83c8-651215124360", "7a1e4c2b-6d3f-5e8a-9b0c-1d2e3f4a5b6c"


def test_overrides_over_the_proxy_config(tmp_path):
    config = _config(tmp_path, [(A_ID, "org/a", 6), (B_ID, "org/b", 8), (C_ID, "org/new-chute", 3)])
    f = fleet_from_mapping({"from_proxy_config": True, "defaults": {"instances": 4, "concurrency": 99, "prefill_rate": 5000},
                            "chutes": [{"name": "org/a", "instances": 1, "context_length": 1000},
                                       {"chute_id": B_ID, "concurrency": 2, "reject_share": 0.5},
                                       {"name": "org/removed", "instances": 9}]}, "fleet.yaml", config)
    got = {c.name: c for c in f.chutes}
    assert list(got) == ["org/a", "org/b", "org/new-chute"]  # exactly the configured chutes, in config order
    a, b, new = got["org/a"], got["org/b"], got["org/new-chute"]
    assert (a.chute_id, a.instances, a.concurrency, a.context_length, a.prefill_rate) == (A_ID, 1, 6, 1000, 5000.0)
    assert (b.instances, b.concurrency, b.reject_share) == (4, 2, 0.5)  # override beats the config's concurrency
    assert (new.chute_id, new.instances, new.concurrency) == (C_ID, 4, 3)  # a chute added to the config: defaults
    assert len(f.warnings) == 1 and "org/removed" in f.warnings[0]
    with pytest.raises(FleetError):
        fleet_from_mapping({"from_proxy_config": True}, "fleet.yaml", None)
    with pytest.raises(FleetError):
        fleet_from_mapping({"from_proxy_config": True, "chutes": [{"instances": 1}]}, "fleet.yaml", config)
    with pytest.raises(FleetError):
        fleet_from_mapping({"from_proxy_config": "yes"}, "fleet.yaml", config)


def test_explicit_fleets_ignore_the_proxy_config(tmp_path):
    config = _config(tmp_path, [(A_ID, "org/a", 6)])
    f = fleet_from_mapping({"chutes": [{"chute_id": B_ID, "name": "test/only"}]}, "fleet.yaml", config)
    assert [c.name for c in f.chutes] == ["test/only"] and f.chutes[0].concurrency == 8


@pytest.mark.parametrize("field,value", [("prefill_rate", 0), ("prefill_rate", "fast"), ("cache_tokens", -1), ("cache_block_tokens", 0),
                                         ("context_length", 0), ("reject_share", 1.5), ("reject_share", True),
                                         ("supported_features", ["tools", "telepathy"]), ("supported_features", "tools"),
                                         ("pricing", {"prompt": -1}), ("pricing", {"input": 1}), ("confidential_compute", "yes")])
def test_new_fleet_fields_are_validated(field, value):
    with pytest.raises(FleetError):
        fleet_from_mapping({"chutes": [{"chute_id": A_ID, "name": "a", field: value}]})


def test_new_admin_fields_are_validated():
    c = ChuteControls(2, 8)
    new = apply_chute_patch(c, {"reject_share": 0.3, "prefill_rate": 500, "cache_tokens": 0, "context_length": 4096})
    assert (new.reject_share, new.prefill_rate, new.cache_tokens, new.context_length) == (0.3, 500.0, 0, 4096)
    for bad in ({"reject_share": -0.1}, {"reject_share": 2}, {"prefill_rate": 0}, {"cache_tokens": -5}, {"cache_tokens": 1.5},
                {"context_length": 0}):
        with pytest.raises(PatchError):
            apply_chute_patch(c, bad)


def test_capabilities_of_the_group_fleet():
    group = {c.name: c for c in load_fleet(ROOT / "simulator/fleet-groups.yaml").chutes}
    assert sorted({c.context_length for c in group.values()}) == [131072, 163840, 262144]
    assert [n for n, c in group.items() if not c.tools] == ["deepseek-ai/DeepSeek-V3"]
    assert group["moonshotai/Kimi-K2.5-TEE"].tee and not group["deepseek-ai/DeepSeek-V3"].tee
    assert group["openai/gpt-oss-120b-TEE"].pricing == (0.04, 0.18) and group["moonshotai/Kimi-K2.5-TEE"].quantization == "int4"
    # the demo keeps tools on every chute: coding agents send tools through the proxy
    assert all(c.tools for c in load_fleet(ROOT / "simulator/fleet-demo.yaml", PROXY_CONFIG).chutes)


def test_account_patch_validation():
    from chutes_lb.simulator.faults import AccountControls, apply_account_patch

    a = apply_account_patch(AccountControls(), {"rl_chute": 20, "rl_user": "inf", "quota_total": 5, "balance": 0, "error_kind": "spam"})
    assert (a.rl_chute, a.rl_user, a.quota_total, a.balance, a.error_kind) == (20, "inf", 5, 0.0, "spam")
    assert apply_account_patch(a, {"rl_chute": None}).rl_chute is None
    for bad in ({"rl_chute": -1}, {"rl_user": "lots"}, {"quota_used": 1.5}, {"error_kind": "x"}, {"hang": True}, [1]):
        with pytest.raises(PatchError):
            apply_account_patch(a, bad)
    with pytest.raises(PatchError):
        apply_chute_patch(ChuteControls(1, 1), {"rl_chute": 3})  # an account field is not a chute field
