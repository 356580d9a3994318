"""Walk-forward windows never test on bars they trained on."""
import pytest

from backend.data.bundled import load_bundled
from backend.evaluation.walkforward import windows


@pytest.mark.parametrize("train_years,test_years", [(1, 1), (3, 1), (5, 2), (4, 3)])
def test_test_bars_come_after_training_bars_and_windows_roll_without_overlap(train_years, test_years):
    ts = load_bundled("SP500").ts
    wins = windows(ts, train_years, test_years)
    assert wins
    years = ts.astype("datetime64[Y]").astype(int) + 1970
    for w in wins:
        assert w.train_start <= w.train_end < w.test_start <= w.test_end
        train, test = set(range(w.train_start, w.train_end + 1)), set(range(w.test_start, w.test_end + 1))
        assert not train & test
        assert len(set(years[w.train_start:w.train_end + 1])) == train_years
        assert len(set(years[w.test_start:w.test_end + 1])) == test_years
        assert w.track_rows.start == w.train_end  # the track starts flat at the last training close
    for a, b in zip(wins, wins[1:]):
        assert b.test_start == a.test_end + 1  # consecutive test windows: no overlap, no gap
    assert years[-1] - years[wins[-1].test_end] < test_years  # no complete test window left out


def test_bad_window_lengths_are_refused():
    with pytest.raises(ValueError):
        windows(load_bundled("SP500").ts, 0, 1)
