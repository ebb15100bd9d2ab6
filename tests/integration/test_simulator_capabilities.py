"""What a chute can do, published (/v1/models, /chutes/{id}) and enforced (window, tools), on the group fleet."""
from __future__ import annotations

from pathlib import Path

import pytest

from sim_fleets import module_simulator

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GPT, V32, KIMI, V3 = "openai/gpt-oss-120b-TEE", "deepseek-ai/DeepSeek-V3.2-TEE", "moonshotai/Kimi-K2.5-TEE", "deepseek-ai/DeepSeek-V3"
TOOLS = [{"type": "function", "function": {"name": "Read", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]
MSG = [{"role": "user", "content": "hi"}]


sim = module_simulator(ROOT / "simulator/fleet-groups.yaml", time_scale=0.001, filler_entries=0)


def test_models_publish_window_features_pricing_quantization_tee(sim_http):
    models = {m["id"]: m for m in sim_http.get("/v1/models").json()["data"]}
    assert list(models) == [GPT, V32, KIMI, V3]
    kimi = models[KIMI]
    assert kimi["chute_id"] == "2ff25e81-4586-5ec8-b892-3a6f342693d7" and kimi["root"] == "moonshotai/Kimi-K2.5"
    assert (kimi["max_model_len"], kimi["context_length"]) == (262144, 262144)
    assert kimi["pricing"] == {"prompt": 0.45, "completion": 2.2, "input_cache_read": 0.225}
    assert kimi["price"]["input_cache_read"]["usd"] == 0.225 and kimi["quantization"] == "int4"
    assert kimi["confidential_compute"] is True and models[V3]["confidential_compute"] is False
    assert "tools" in kimi["supported_features"] and models[V3]["supported_features"] == ["json_mode", "structured_outputs"]
    assert [models[n]["context_length"] for n in (GPT, V32, V3)] == [131072, 163840, 163840]


def test_chute_record_by_name_or_uuid(sim, sim_http):
    by_name = sim_http.get(f"/chutes/{V32}").json()
    by_id = sim_http.get("/chutes/398651e1-5f85-5e50-a513-7c5324e8e839").json()
    assert by_name["chute_id"] == by_id["chute_id"] == "398651e1-5f85-5e50-a513-7c5324e8e839"
    assert by_name["name"] == V32 and by_name["concurrency"] == 8 and by_name["max_instances"] >= 2
    assert len(by_name["instances"]) == 2 and all(i["active"] for i in by_name["instances"])


def test_tools_on_a_chute_without_tools_is_vllms_400(sim_http):
    r = sim_http.post("/v1/chat/completions", json={"model": V3, "messages": MSG, "tools": TOOLS})
    assert r.status_code == 400
    assert r.json() == {"object": "error", "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
                        "type": "BadRequestError", "param": None, "code": 400}
    assert sim_http.post("/v1/chat/completions", json={"model": V3, "messages": MSG, "tools": TOOLS, "tool_choice": "none"}).status_code == 200
    assert sim_http.post("/v1/chat/completions", json={"model": V32, "messages": MSG, "tools": TOOLS}).status_code == 200
    # Chutes fails over on 429/503 only: a list starting with the tool-less chute gets its 400
    assert sim_http.post("/v1/chat/completions", json={"model": f"{V3},{V32}", "messages": MSG, "tools": TOOLS}).status_code == 400


def test_the_window_differs_per_chute(sim_http):
    long = [{"role": "user", "content": "a" * 560_000}]  # 140,001 tokens
    small = sim_http.post("/v1/chat/completions", json={"model": GPT, "messages": long, "max_tokens": 10})
    assert small.status_code == 400 and "maximum context length is 131072 tokens" in small.json()["message"]
    big = sim_http.post("/v1/chat/completions", json={"model": V32, "messages": long, "max_tokens": 10})
    assert big.status_code == 200 and big.json()["usage"]["prompt_tokens"] == 140_001
