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
