import pytest

from backend.config import VARIABLES, ConfigError, Settings, env_example, load_settings


def test_defaults_are_valid_and_mirror_env_example():
    s = Settings()
    assert s.service.database_url.startswith("sqlite:///") and s.service.broker == "sim"
    names = {line.split("=")[0] for line in open(".env.example") if "=" in line and not line.startswith("#")}
    assert names == {name.upper() for name in VARIABLES}
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
        ({"RL_SIZING_EPSILON": "0.1", "RL_SIZING_EPSILON_MIN": "0.2"}, "RL_SIZING_EPSILON_MIN"),
    ],
)
def test_a_bad_value_is_named(monkeypatch, env, name):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=name):
        load_settings(_env_file=None)


def test_env_example_loads_to_the_defaults():
    assert load_settings(_env_file=".env.example") == load_settings(_env_file=None)


def test_the_variables_fill_their_groups(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("RM_MAX_LEVERAGE=2\nSIM_SYMBOLS=[\"SP500\"]\nSIZER_API_KEY=k3y-for-tests-0123456789\n"
                        "RL_SIZING_WIN_RATE_WINDOW=30\nRL_SIZING_SEED=\n")
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/1")
    monkeypatch.setenv("RL_POSITION_SIZING_ENABLED", "false")
    s = load_settings(_env_file=env_file, rl_sizing_epsilon=0.2)
    assert (s.risk.max_leverage, s.sim.symbols, s.state.win_rate_window) == (2.0, ("SP500",), 30)
    assert s.service.api_key.get_secret_value() == "k3y-for-tests-0123456789" and s.sizing.seed is None
    assert s.bus.redis_url == "redis://localhost:6379/1" and not s.sizing.rl_enabled and s.sizing.epsilon == 0.2
    assert s.replace(rm_max_leverage=3).risk.max_leverage == 3.0 and s.replace().variables() == s.variables()
    with pytest.raises(ValueError, match="RM_MAX_LEVERAGEE is not a setting"):
        s.replace(rm_max_leveragee=3)
