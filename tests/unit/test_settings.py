import logging
import re
from pathlib import Path

import pytest

from chutes_lb.logs import RedactingFilter
from chutes_lb.settings import Secret, Settings, SettingsError, load_settings, variables

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_defaults_parse():
    s = Settings.from_mapping({})
    assert s.litellm_port == 4000
    assert s.routing_strategy == "headroom"
    assert s.poll_interval_seconds == 30.0


@pytest.mark.parametrize(
    "name,value",
    [("POLL_INTERVAL_SECONDS", "abc"), ("POLL_INTERVAL_SECONDS", "-1"), ("POLL_INTERVAL_SECONDS", "nan"),
     ("LITELLM_PORT", "70000"), ("ROUTING_STRATEGY", "argmin"), ("ROUTING_SLOW_RATIO", "0.8"), ("LITELLM_WORKERS", "0"), ("LOG_LEVEL", "loud")],
)
def test_malformed_value_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=re.escape(name)):
        Settings.from_mapping({name: value})


def test_require_names_missing_secret():
    s = Settings.from_mapping({})
    with pytest.raises(SettingsError, match="LITELLM_MASTER_KEY"):
        s.require("litellm_master_key")
    Settings.from_mapping({"LITELLM_MASTER_KEY": "sk-x"}).require("litellm_master_key")


def test_secrets_never_in_repr():
    s = Settings.from_mapping({"CHUTES_API_KEY": "cpk_supersecret", "LITELLM_MASTER_KEY": "sk-canary-123"})
    for text in (repr(s), str(s), f"{s.chutes_api_key}", repr(s.litellm_master_key)):
        assert "supersecret" not in text and "canary" not in text
    assert s.chutes_api_key.get() == "cpk_supersecret"
    assert isinstance(s.litellm_master_key, Secret)


def test_environment_beats_dotenv_beats_default(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("LITELLM_PORT=4100\nPOLL_INTERVAL_SECONDS=7\n")
    s = load_settings({"LITELLM_PORT": "4200"}, dotenv_path=env_file)
    assert s.litellm_port == 4200  # environment wins
    assert s.poll_interval_seconds == 7  # then .env
    assert s.poll_timeout_seconds == 10  # then default


def test_env_example_documents_every_variable():
    from chutes_lb.settings import env_example

    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), "regenerate: python -m chutes_lb.settings > .env.example"
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, re.M))
    declared = {name for name, _, _ in variables()}
    assert declared <= documented
    compose_vars = set()
    for path in ROOT.glob("compose*.yaml"):
        compose_vars |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", path.read_text()))
    compose_vars.discard("PROMETHEUS_TEST_PORT")  # set by the e2e tests only
    compose_vars -= {v for v in compose_vars if v.endswith("_DIGEST")}  # Swarm config digests: set by scripts/swarm-deploy.sh
    assert compose_vars <= documented, f"missing from .env.example: {sorted(compose_vars - documented)}"
    for secret in ("CHUTES_API_KEY", "LITELLM_MASTER_KEY", "GRAFANA_ADMIN_PASSWORD"):
        assert re.search(rf"^{secret}=$", text, re.M), f"{secret} must have no value in .env.example"


def test_redacting_filter_scrubs_secrets():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s other", ("cpk_abcdef123",), None)
    RedactingFilter(["cpk_abcdef123"]).filter(record)
    assert record.getMessage() == "key=**** other"


def test_readme_variable_table_is_generated_from_the_settings():
    from chutes_lb.docs import render

    text = (ROOT / "README.md").read_text()
    assert render(text) == text, "regenerate: python -m chutes_lb.docs"
