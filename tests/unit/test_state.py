import numpy as np
import pytest

from backend.domain.state import (
    ALL_STATE_KEYS,
    BucketEdges,
    Regime,
    action_key,
    classify_regime,
    exposure_menu,
    legacy_action_exposure,
    parse_action_key,
    pooled_keys,
    pooling_tree,
    state_key,
    validate_state_key,
)

EDGES = BucketEdges()


def test_spaces_have_the_documented_sizes():
    assert len(ALL_STATE_KEYS) == 300 and len(set(ALL_STATE_KEYS)) == 300
    menu = exposure_menu(3.0)
    assert menu[0] == 0 and menu[1] == 0.05 and menu[-1] == 3.0 and len(menu) == 20
    assert list(menu) == sorted(set(menu))
    assert exposure_menu(8.0)[-3:] == (5.0, 6.3, 8.0)  # an R10 top is not repeated


@pytest.mark.parametrize("top", [0.5, 1.0, 3.0, 4.5, 8.0])
def test_the_menus_best_point_reaches_97_percent_of_the_continuous_optimums_growth(top):
    """Log growth near the optimum is mu f - sigma^2 f^2 / 2: the share of the optimum's growth at f is
    1 - (1 - f / f*)^2. For every f* from the smallest bet to the top, some menu point keeps >= 97%."""
    menu = np.array(exposure_menu(top))
    for f_star in np.geomspace(0.05, top, 2000):
        share = 1 - (1 - menu / f_star) ** 2
        assert share.max() >= 0.97, (top, f_star)


def test_action_keys_are_exposures_and_round_trip():
    for e in exposure_menu(8.0):
        assert parse_action_key(action_key(e)) == e
    assert action_key(0.0) == "0" and action_key(0.063) == "0.063" and action_key(1.25) == "1.25"
    for bad in ("1.0|3.0", "-1", "0.01", "nan", "x"):
        with pytest.raises(ValueError):
            parse_action_key(bad)


def test_the_predecessors_actions_map_onto_the_menu():
    menu = exposure_menu(3.0)
    # size_mult x leverage x the ATR rule's default exposure (0.25), to the nearest menu point in ratio
    assert legacy_action_exposure("1.0|1.0", menu) == 0.25
    assert legacy_action_exposure("1.0|3.0", menu) == 0.8  # 0.75
    assert legacy_action_exposure("0.3|1.0", menu) == 0.08  # 0.075
    assert legacy_action_exposure("1.5|5.0", menu) == 2.0  # 1.875
    with pytest.raises(ValueError):
        legacy_action_exposure("2.0|1.0", menu)


def test_a_state_pools_with_coarser_levels_and_its_siblings():
    key = "high_vol_ranging|high|light|good"
    assert pooled_keys(key) == ("*|*|*|*", "*|high|*|*", "high_vol_ranging|high|*|*", key)
    tree = dict(pooling_tree(key))
    assert len(tree["*|high|*|*"]) == 5 and "*|very_low|*|*" in tree["*|high|*|*"]
    assert len(tree["high_vol_ranging|high|*|*"]) == 5 and "neutral|high|*|*" in tree["high_vol_ranging|high|*|*"]
    assert len(tree[key]) == 12 and all(k.startswith("high_vol_ranging|high|") for k in tree[key])
    assert validate_state_key("*|high|*|*", pooled=True) == "*|high|*|*"
    with pytest.raises(ValueError):
        validate_state_key("*|high|*|*")
    with pytest.raises(ValueError):
        validate_state_key("*|*|light|*", pooled=True)


@pytest.mark.parametrize(
    "atr_pct, adx, regime",
    [
        (0.01, 30, Regime.LOW_VOL_TRENDING),
        (0.03, 30, Regime.HIGH_VOL_TRENDING),
        (0.01, 15, Regime.LOW_VOL_RANGING),
        (0.03, 15, Regime.HIGH_VOL_RANGING),
        (0.01, 22, Regime.NEUTRAL),
        (0.03, 20, Regime.NEUTRAL),  # edges belong to the neutral band
        (0.03, 25, Regime.NEUTRAL),
    ],
)
def test_regime_comes_from_atr_and_adx(atr_pct, adx, regime):
    assert classify_regime(atr_pct, adx, EDGES) is regime


@pytest.mark.parametrize(
    "confidence, exposure, win_rate, expected",
    [
        (0.10, 0.0, None, "low_vol_trending|very_low|light|neutral"),
        (0.45, 0.50, 0.45, "low_vol_trending|low|moderate|neutral"),
        (0.60, 1.20, 0.30, "low_vol_trending|medium|heavy|bad"),
        (0.80, 2.00, 0.61, "low_vol_trending|high|max|good"),
        (0.90, 3.00, 1.00, "low_vol_trending|very_high|max|good"),
    ],
)
def test_state_key_buckets(confidence, exposure, win_rate, expected):
    key = state_key(atr_pct=0.01, adx=30, confidence=confidence, exposure=exposure, win_rate=win_rate, edges=EDGES)
    assert key == expected
    assert validate_state_key(key) == key


def test_bucket_edges_are_configurable_and_checked():
    custom = BucketEdges(confidence=(0.2, 0.4, 0.6, 0.8))
    assert state_key(atr_pct=0.01, adx=30, confidence=0.5, exposure=0, win_rate=None, edges=custom).split("|")[1] == "medium"
    with pytest.raises(ValueError, match="confidence"):
        BucketEdges(confidence=(0.5, 0.4, 0.6, 0.8))
    with pytest.raises(ValueError, match="exposure"):
        BucketEdges(exposure=(0.3, 0.6))


def test_unknown_state_keys_fail():
    with pytest.raises(ValueError):
        validate_state_key("calm|high|light|good")
