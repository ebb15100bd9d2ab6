"""``benchmarks/profile_proxy.py`` reads py-spy's collapsed stacks and charges them as documented."""
from __future__ import annotations

import pytest

from benchmarks.profile_proxy import frame_name, layer_of, package_of, parse_raw, summarise

pytestmark = pytest.mark.unit

RAW = """\
run (/v/lib/python3.11/asyncio/events.py:80);__call__ (/w/src/chutes_lb/proxy/middleware.py:120);call (/w/src/chutes_lb/proxy/gateway.py:190);acompletion (/v/lib/python3.11/site-packages/litellm/router.py:900);dumps (/v/lib/python3.11/json/__init__.py:231) 6
run (/v/lib/python3.11/asyncio/events.py:80);__call__ (/w/src/chutes_lb/proxy/middleware.py:120) 2
run (/v/lib/python3.11/asyncio/events.py:80);_handle (/v/lib/python3.11/site-packages/litellm/litellm_core_utils/logging_worker.py:50) 2
"""


def test_parse_and_names() -> None:
    samples = parse_raw(RAW + "garbage line\n\n")
    assert [c for _, c in samples] == [6, 2, 2]
    assert frame_name("call (/w/src/chutes_lb/proxy/gateway.py:190)") == "chutes_lb/proxy/gateway.py:call"
    assert frame_name("acompletion (/v/lib/python3.11/site-packages/litellm/router.py:900)") == "litellm/router.py:acompletion"
    assert package_of("chutes_lb/proxy/gateway.py:call") == "chutes_lb.proxy"
    assert package_of("litellm/router.py:acompletion") == "litellm"
    assert package_of("litellm/litellm_core_utils/logging_worker.py:_handle") == "litellm.litellm_core_utils"
    assert package_of("json/__init__.py:dumps") == "json"
    assert package_of("asyncio/events.py:run") == "asyncio"


def test_summary_shares() -> None:
    s = summarise(parse_raw(RAW))
    assert dict(s["self"])["json/__init__.py:dumps"] == pytest.approx(60.0)
    assert dict(s["inclusive"])["chutes_lb/proxy/middleware.py:__call__"] == pytest.approx(80.0)
    assert dict(s["inclusive"])["asyncio/events.py:run"] == pytest.approx(100.0)
    # charged to the innermost frame of our code: gateway.call (6), middleware (2), none (2)
    assert dict(s["ours"]) == pytest.approx({"chutes_lb/proxy/gateway.py:call": 60.0, "chutes_lb/proxy/middleware.py:__call__": 20.0,
                                             "(no chutes_lb frame)": 20.0})
    assert dict(s["package"]) == pytest.approx({"json": 60.0, "chutes_lb.proxy": 20.0, "litellm.litellm_core_utils": 20.0})


def test_layers_charge_the_innermost_known_frame() -> None:
    s = summarise(parse_raw(RAW))
    # json under litellm/router.py -> LiteLLM router; middleware alone -> ours; the logging worker -> logging
    assert dict(s["layer"]) == pytest.approx({"LiteLLM router": 60.0, "our routes, gateway and middleware (chutes_lb.proxy)": 20.0,
                                              "LiteLLM logging and callbacks": 20.0})
    wrapper = ["_anthropic_sse (/w/src/chutes_lb/proxy/agent_api.py:1)",
               "AnthropicStreamWrapper.__anext__ (/v/site-packages/litellm/llms/anthropic/pass_through/adapters/streaming_iterator.py:9)",
               "CustomStreamWrapper.__anext__ (/v/site-packages/litellm/litellm_core_utils/streaming_handler.py:5)",
               "BaseModel.model_dump (/v/site-packages/pydantic/main.py:3)"]
    names = [frame_name(f) for f in wrapper]
    assert layer_of(names) == "LiteLLM chat stream wrapper"  # the translation is not charged for the chat stream's work
    assert layer_of(names[:2] + names[3:]) == "translation (Messages / Responses <-> chat)"
    assert layer_of(["json/__init__.py:dumps"]) == "other (no frame of a known layer)"
