"""The Alpaca broker's retries, step by step, on scripted answers (no server): what is retried, what is counted,
when `recover` is asked, and what a 429 pauses."""
from __future__ import annotations

import pytest
import requests
from alpaca.common.exceptions import APIError

from backend.brokers.alpaca import AlpacaBroker
from backend.brokers.base import BrokerUnavailable, OrderRejected
from tests.conftest import make_settings


def api_error(status: int, headers: dict | None = None) -> APIError:
    response = requests.Response()
    response.status_code, response.headers = status, requests.structures.CaseInsensitiveDict(headers or {})
    return APIError(f'{{"message": "answer {status}"}}', requests.HTTPError(response=response))


@pytest.fixture
def broker():
    settings = make_settings(broker="alpaca", alpaca_api_key_id="PKTEST", alpaca_api_secret_key="secret",
                             alpaca_trading_url="http://127.0.0.1:9", alpaca_data_url="http://127.0.0.1:9",
                             alpaca_max_retries=2)
    broker = AlpacaBroker(settings.alpaca, connections=1)
    broker._backoff_s = 0.001
    broker.pauses = []
    broker.bucket.pause = broker.pauses.append
    return broker


def scripted(*answers):
    """fn() for _call: raises or returns each answer in turn, and logs what happened in `calls`."""
    calls, answers = [], list(answers)

    def fn():
        answer = answers.pop(0)
        calls.append("fn")
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return fn, calls


def test_a_429_pauses_the_bucket_and_spends_no_retry_nor_a_recovery(broker):
    fn, calls = scripted(api_error(503), api_error(429), api_error(429, {"Retry-After": "3"}), requests.Timeout(),
                         api_error(429), "done")
    recover = lambda: calls.append("recover")  # noqa: E731 (finds nothing)
    broker._backoff_s = 0.1
    assert broker._call("test", fn, recover) == "done"  # 2 failures counted, the retries allowed
    assert calls == ["fn", "recover", "fn", "fn", "fn", "recover", "fn", "fn"]
    assert broker.pauses == [0.1, 3.0, 0.4]  # Retry-After when sent, else a backoff doubled by each 429 of the call


def test_recover_answers_instead_of_a_retry(broker):
    fn, calls = scripted(requests.ConnectionError("reset"))
    assert broker._call("submit", fn, recover=lambda: "found it") == "found it"
    assert calls == ["fn"]


def test_retries_are_bounded_then_the_broker_is_unavailable(broker):
    fn, calls = scripted(api_error(500), api_error(502), api_error(503), "too late")
    with pytest.raises(BrokerUnavailable, match=r"alpaca test failed 3 times; last: HTTP 503: answer 503"):
        broker._call("test", fn)
    assert calls == ["fn"] * 3


@pytest.mark.parametrize("status, order, error, message", [
    (401, True, BrokerUnavailable, "refused the API keys"),
    (403, True, OrderRejected, "answer 403"),
    (422, False, BrokerUnavailable, r"refused test \(HTTP 422\)"),
])
def test_refusals_are_not_retried(broker, status, order, error, message):
    fn, calls = scripted(api_error(status), "never")
    with pytest.raises(error, match=message):
        broker._call("test", fn, order=order)
    assert calls == ["fn"]


def test_other_client_errors_reach_the_caller_as_they_are(broker):
    fn, _ = scripted(api_error(404))
    with pytest.raises(APIError):
        broker._call("test", fn)
    assert broker._get_or_none("test", scripted(api_error(404))[0]) is None
