from pathlib import Path

import pytest

from chutes_lb.fleet import FleetError, chutes_from_config, load_chutes

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_shipped_config_has_at_least_three_chutes_with_uuids():
    chutes = load_chutes(ROOT / "proxy" / "litellm-config.yaml")
    assert len(chutes) >= 3
    assert len({c.chute_id for c in chutes}) == len(chutes)
    assert all(c.model_group == "chutes-models" for c in chutes)
    assert chutes[0].name == "moonshotai/Kimi-K2.5-TEE"


@pytest.mark.parametrize(
    "config,match",
    [({}, "no model_list"), ({"model_list": []}, "empty"),
     ({"model_list": [{"litellm_params": {"model": "openai/x"}}]}, "model_info.id"),
     ({"model_list": [{"litellm_params": {"model": "openai/x"}, "model_info": {"id": "a", "concurrency": 0}}]}, "concurrency"),
     ({"model_list": [{"litellm_params": {"model": "openai/x"}, "model_info": {"id": "a"}}] * 2}, "duplicate")],
)
def test_malformed_model_lists_are_rejected(config, match):
    with pytest.raises(FleetError, match=match):
        chutes_from_config(config)


def test_missing_file_names_the_variable(tmp_path):
    with pytest.raises(FleetError, match="LITELLM_CONFIG_PATH"):
        load_chutes(tmp_path / "nope.yaml")


def _entry(group, chute_id, name="org/m", **info):
    return {"model_name": group, "litellm_params": {"model": f"openai/{name}"}, "model_info": {"id": chute_id, **info}}


UUID_A = "2ff25e81-4586-5ec8-b892-3a6f342693d7"


def test_one_chute_in_two_model_groups_is_one_chute():
    fleet = chutes_from_config({"model_list": [_entry("chutes-models", UUID_A, "deepseek-ai/DeepSeek-V3"),
                                               _entry("deepseek-only", UUID_A, "deepseek-ai/DeepSeek-V3")],
                                "router_settings": {"fallbacks": [{"deepseek-only": ["chutes-models"]}]}})
    assert [c.chute_id for c in fleet.chutes] == [UUID_A]
    assert [(d.model_group, d.chute_id) for d in fleet.deployments] == [("chutes-models", UUID_A), ("deepseek-only", UUID_A)]
    assert fleet.groups == {"chutes-models": (UUID_A,), "deepseek-only": (UUID_A,)}
    assert fleet.fallbacks == {"deepseek-only": ("chutes-models",)}


def test_a_chute_listed_twice_must_agree_with_itself():
    with pytest.raises(FleetError, match="a chute is one chute"):
        chutes_from_config({"model_list": [_entry("a", UUID_A, concurrency=8), _entry("b", UUID_A, concurrency=4)]})


def test_a_fractional_concurrency_is_refused_not_truncated():
    with pytest.raises(FleetError, match=r"concurrency must be a positive integer, got 2\.7"):
        chutes_from_config({"model_list": [_entry("a", UUID_A, concurrency=2.7)]})


def test_an_id_that_is_not_a_uuid_is_a_warning():
    fleet = chutes_from_config({"model_list": [_entry("a", "my-chute")]})
    assert fleet.chutes[0].chute_id == "my-chute"
    assert any("not a UUID" in w for w in fleet.warnings)
    assert not chutes_from_config({"model_list": [_entry("a", UUID_A)]}).warnings


def test_aliases_and_fallbacks_must_name_model_groups():
    with pytest.raises(FleetError, match="not a model group"):
        chutes_from_config({"model_list": [_entry("a", UUID_A)], "router_settings": {"model_group_alias": {"claude-x": "nope"}}})
    with pytest.raises(FleetError, match="not a model group"):
        chutes_from_config({"model_list": [_entry("a", UUID_A)], "router_settings": {"fallbacks": [{"a": ["nope"]}]}})
    fleet = chutes_from_config({"model_list": [_entry("a", UUID_A)], "router_settings": {"model_group_alias": {"claude-x": "a"}}})
    assert fleet.aliases == {"claude-x": "a"}
