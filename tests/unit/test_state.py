import pytest

from backend.domain.state import (
    ACTIONS,
    ALL_STATE_KEYS,
    Action,
    BucketEdges,
    Regime,
    classify_regime,
    state_key,
    validate_state_key,
)

EDGES = BucketEdges()


def test_spaces_have_the_documented_sizes():
    assert len(ALL_STATE_KEYS) == 300 and len(set(ALL_STATE_KEYS)) == 300
    assert len(ACTIONS) == 25
    assert {a.key for a in ACTIONS} >= {"0.3|1.0", "1.5|5.0", "1.0|3.0"}


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
        (0.45, 0.30, 0.45, "low_vol_trending|low|moderate|neutral"),
        (0.60, 0.70, 0.30, "low_vol_trending|medium|heavy|bad"),
        (0.80, 0.85, 0.61, "low_vol_trending|high|max|good"),
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


def test_action_keys_round_trip_and_unknown_keys_fail():
    for a in ACTIONS:
        assert Action.parse(a.key) == a
    with pytest.raises(ValueError):
        Action.parse("2.0|1.0")
    with pytest.raises(ValueError):
        validate_state_key("calm|high|light|good")
