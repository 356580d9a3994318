"""Bars from files: good ones load, and every broken rule stops with the file, the row and the column."""
import numpy as np
import pandas as pd
import pytest

from backend.data.files import BarsFileError, bars_per_year, load_bars, parse_bars_spec

GOOD = """Date,Open,High,Low,Close,Volume
2024-01-02,100,101,99,100.5,1000
2024-01-03,100.5,102,100,101.5,1100
2024-01-04,101.5,101.6,98,99,900
"""


def write(tmp_path, text: str, name: str = "aapl.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_daily_csv_loads_with_any_case_and_the_symbol_from_its_name(tmp_path):
    path = write(tmp_path, GOOD)
    symbol, parsed = parse_bars_spec(str(path))
    assert (symbol, parsed) == ("AAPL", path)
    s = load_bars(path, symbol)
    assert s.symbol == "AAPL" and len(s) == 3
    assert s.ts[0] == np.datetime64("2024-01-02T00:00:00") and s.close[-1] == 99 and s.volume[1] == 1100
    assert parse_bars_spec(f"btc/usd={path}") == ("BTC/USD", path)


def test_intraday_parquet_with_zones_and_no_volume(tmp_path):
    ts = pd.date_range("2024-03-01 09:30", periods=390 * 5, freq="1min", tz="America/New_York")
    close = 100 + np.cumsum(np.full(len(ts), 0.01))
    df = pd.DataFrame({"timestamp": ts, "open": close - 0.01, "high": close + 0.02, "low": close - 0.03,
                       "close": close})
    path = tmp_path / "spy.parquet"
    df.to_parquet(path)
    s = load_bars(path, "SPY")
    assert s.ts[0] == np.datetime64("2024-03-01T14:30:00")  # 9:30 in New York, as UTC
    assert (s.volume == 0).all()
    assert bars_per_year(s.ts) > 100_000  # minutes, around the clock here: annualised as observed


def test_epoch_seconds_and_daily_bars_per_year(tmp_path):
    days = pd.bdate_range("2020-01-01", "2023-12-29")
    epoch = (days - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    df = pd.DataFrame({"time": epoch, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0})
    path = tmp_path / "x.csv"
    df.to_csv(path, index=False)
    s = load_bars(path, "X")
    assert s.ts[0] == np.datetime64("2020-01-01") and bars_per_year(s.ts) == pytest.approx(261, abs=2)


@pytest.mark.parametrize("text, row, column, words", [
    (GOOD.replace("2024-01-03", "2024-01-02"), 2, "Date", "repeats"),
    (GOOD.replace("2024-01-04", "2024-01-01"), 3, "Date", "comes before"),
    (GOOD.replace("2024-01-03", "yesterday"), 2, "Date", "not a date"),
    (GOOD.replace("100.5,102,100,101.5", "100.5,102,100,nan"), 2, "Close", "finite positive"),
    (GOOD.replace("100.5,102,100,101.5", "100.5,102,-1,101.5"), 2, "Low", "finite positive"),
    (GOOD.replace("100.5,102,100,101.5", "100.5,101,100,101.5"), 2, "High", "at least the open and the close"),
    (GOOD.replace("101.5,101.6,98,99", "101.5,101.6,99.5,99"), 3, "Low", "at most the open and the close"),
    (GOOD.replace(",900", ",-5"), 3, "Volume", "not negative"),
])
def test_a_broken_rule_names_the_file_row_and_column(tmp_path, text, row, column, words):
    path = write(tmp_path, text)
    with pytest.raises(BarsFileError) as err:
        load_bars(path, "AAPL")
    message = str(err.value)
    assert str(path) in message and f"row {row}" in message and repr(column) in message and words in message


@pytest.mark.parametrize("text, name, words", [
    ("Open,High,Low,Close\n1,1,1,1\n1,1,1,1\n", "a.csv", "no date or timestamp column"),
    ("Date,Open,High,Close\n2024-01-02,1,1,1\n2024-01-03,1,1,1\n", "a.csv", "missing column(s) low"),
    ("Date,Open,High,Low,Close\n2024-01-02,1,1,1,1\n", "a.csv", "at least 2"),
    ("whatever", "a.xlsx", "unknown file type"),
    ("\x00\x01", "a.parquet", "cannot be read"),
])
def test_files_that_are_not_bars(tmp_path, text, name, words):
    path = write(tmp_path, text, name)
    with pytest.raises(BarsFileError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_bars(path, "A")
    with pytest.raises(BarsFileError, match="no such file"):
        load_bars(tmp_path / "none.csv", "A")
