import pytest

from backend.config import ConfigError, Settings, env_example, load_settings


def test_defaults_are_valid_and_mirror_env_example():
    s = Settings(_env_file=None)
    assert s.database_url.startswith("sqlite:///") and s.broker == "sim"
    names = {line.split("=")[0] for line in open(".env.example") if "=" in line and not line.startswith("#")}
    assert names == {f.upper() for f in Settings.model_fields}
    assert open(".env.example").read() == env_example(), "regenerate .env.example (see backend.config.env_example)"


@pytest.mark.parametrize(
    "env, name",
    [
        ({"RL_SIZING_CONFIDENCE_Z": "-1"}, "RL_SIZING_CONFIDENCE_Z"),
        ({"RM_MAX_EXPOSURE": "0.01"}, "RM_MAX_EXPOSURE"),
        ({"RL_SIZING_EPSILON": "abc"}, "RL_SIZING_EPSILON"),
        ({"RM_MAX_LEVERAGE": "0.5"}, "RM_MAX_LEVERAGE"),
        ({"BROKER": "binance"}, "BROKER"),
        ({"RM_MIN_POSITION_USD": "500", "RM_MAX_POSITION_USD": "100"}, "RM_MIN_POSITION_USD"),
        ({"RL_STATE_CONFIDENCE_EDGES": "[0.9, 0.1, 0.2, 0.3]"}, "confidence"),
    ],
)
def test_a_bad_value_is_named(monkeypatch, env, name):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=name):
        load_settings(_env_file=None)


def test_env_example_loads_to_the_defaults():
    assert Settings(_env_file=".env.example") == Settings(_env_file=None)
