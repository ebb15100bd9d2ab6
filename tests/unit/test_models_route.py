"""``/v1/models`` lists the model groups and the alias patterns (not LiteLLM's expansion of
``anthropic/*`` into 844 entries), ``/v1/models/{id}`` answers, embeddings are refused clearly."""
from __future__ import annotations

import asyncio

import pytest

from chutes_lb.fleet import chutes_from_config
from chutes_lb.proxy.models import ModelList
from tests.unit.asgi_client import call

pytestmark = pytest.mark.unit

CONFIG = {
    "model_list": [{"model_name": "chutes-models", "litellm_params": {"model": f"openai/org/c{i}"},
                    "model_info": {"id": f"aaaaaaaa-0000-5000-8000-00000000000{i}", "max_model_len": w}}
                   for i, w in enumerate((131072, 163840))],
    "router_settings": {"model_group_alias": {"claude-*": "chutes-models", "anthropic/*": "chutes-models", "fast": "chutes-models"}},
}


async def behind(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"litellm"})


def make() -> ModelList:
    fleet = chutes_from_config(CONFIG)

    def group_of(model: str) -> str | None:
        import fnmatch
        if model in fleet.groups:
            return model
        return next((g for p, g in fleet.aliases.items() if fnmatch.fnmatchcase(model, p)), None)

    return ModelList(behind, fleet, group_of, lambda group: 163840)


def test_the_list_is_the_groups_and_the_alias_patterns() -> None:
    answer = asyncio.run(call(make(), "GET", "/v1/models"))
    ids = [m["id"] for m in answer.json()["data"]]
    assert ids == ["chutes-models", "claude-*", "anthropic/*", "fast"]
    group = answer.json()["data"][0]
    assert group["chutes_lb"] == {"kind": "model_group", "chutes": 2, "max_model_len": 163840}


@pytest.mark.parametrize("name,kind", [("chutes-models", "model_group"), ("fast", "alias"), ("claude-*", "alias_pattern"),
                                       ("claude-sonnet-4-5", "alias")])
def test_one_model_answers(name: str, kind: str) -> None:
    answer = asyncio.run(call(make(), "GET", f"/v1/models/{name}"))
    assert answer.status == 200 and answer.json()["id"] == name and answer.json()["chutes_lb"]["kind"] == kind


def test_an_unknown_model_and_embeddings_are_clear_404s() -> None:
    answer = asyncio.run(call(make(), "GET", "/v1/models/gpt-4o"))
    assert answer.status == 404 and answer.json()["error"]["code"] == "model_not_found"
    answer = asyncio.run(call(make(), "POST", "/v1/embeddings", b'{"model": "x", "input": "hi"}'))
    assert answer.status == 404 and answer.json()["error"]["code"] == "unsupported_endpoint"
    assert "/v1/chat/completions" in answer.json()["error"]["message"]


def test_everything_else_goes_on() -> None:
    assert asyncio.run(call(make(), "GET", "/health")).status == 299
