"""RestClient: waits, retries and errors, checked without sockets (httpx.MockTransport) on a fake clock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from candlelake.sources.http import (
    ExchangeRequestError,
    ExchangeUnavailable,
    RestClient,
    json_array_items,
)

pytestmark = pytest.mark.unit

OK = httpx.Response(200, json={"ok": True})


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Script:
    """Answers requests with the given responses (or exceptions) in order; records when each came."""

    def __init__(self, time: FakeTime, *answers: httpx.Response | Exception) -> None:
        self.time = time
        self.answers = list(answers)
        self.sent_at: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent_at.append(self.time.now)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client_for(script: Script, **options: object) -> RestClient:
    defaults: dict[str, object] = {"backoff_s": 0.5, "backoff_max_s": 8.0, "max_attempts": 4}
    return RestClient(
        "https://api.example.test",
        transport=httpx.MockTransport(script),
        sleep=script.time.sleep,
        clock=script.time.clock,
        **{**defaults, **options},
    )


def retry_after(status: int, seconds: str, body: object | None = None) -> httpx.Response:
    return httpx.Response(status, headers={"Retry-After": seconds}, json=body or {"code": -1003, "msg": "slow down"})


def test_rate_limited_request_waits_exactly_retry_after_then_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()
    script = Script(time, retry_after(429, "7"), OK)
    client = client_for(script)
    with caplog.at_level(logging.WARNING, logger="candlelake.sources.http"):
        assert client.get_json("/x") == {"ok": True}
    assert script.sent_at[1] - script.sent_at[0] == 7
    assert time.sleeps == [7]
    assert (client.rate_limited, client.banned) == (1, 0)
    assert len(caplog.records) == 1 and "429" in caplog.text and "7 s" in caplog.text


def test_ban_waits_exactly_retry_after_and_is_counted() -> None:
    time = FakeTime()
    script = Script(time, retry_after(418, "120"), OK)
    client = client_for(script)
    assert client.get_json("/x") == {"ok": True}
    assert script.sent_at[1] - script.sent_at[0] == 120
    assert (client.rate_limited, client.banned) == (0, 1)


def test_retry_after_longer_than_cap_raises_without_asking_again() -> None:
    time = FakeTime()
    script = Script(time, retry_after(418, "7200"))
    client = client_for(script, max_retry_after_s=300)
    with pytest.raises(ExchangeUnavailable, match="7200 s"):
        client.get_json("/x")
    assert len(script.sent_at) == 1 and time.sleeps == []
    # A later call within the ban is refused locally: asking during a ban prolongs it.
    time.now += 60
    with pytest.raises(ExchangeUnavailable, match="wait 7140 s more"):
        client.get_json("/y")
    assert len(script.sent_at) == 1


def test_a_later_call_waits_out_the_remaining_retry_after() -> None:
    time = FakeTime()
    script = Script(time, retry_after(429, "5"), OK)
    client = client_for(script, max_attempts=1)
    with pytest.raises(ExchangeUnavailable, match="429"):
        client.get_json("/x")
    time.now += 2
    assert client.get_json("/x") == {"ok": True}
    assert script.sent_at[1] - script.sent_at[0] == 5
    assert time.sleeps == [3]


def test_rate_limited_without_retry_after_backs_off_exponentially_with_jitter() -> None:
    time = FakeTime()
    limited = httpx.Response(429, json={"message": "Public rate limit exceeded"})
    script = Script(time, limited, limited, limited, OK)
    client = client_for(script)
    assert client.get_json("/x") == {"ok": True}
    assert client.rate_limited == 3
    for attempt, waited in enumerate(time.sleeps):
        floor = 0.5 * 2**attempt
        assert floor <= waited <= floor + 0.5


def test_server_errors_are_retried_then_reported_in_one_line() -> None:
    time = FakeTime()
    script = Script(time, *[httpx.Response(503, text="Service Unavailable")] * 4)
    client = client_for(script)
    with pytest.raises(ExchangeUnavailable) as raised:
        client.get_json("/api/v3/aggTrades")
    message = str(raised.value)
    assert "\n" not in message
    assert "api.example.test" in message and "503" in message and "/api/v3/aggTrades" in message
    assert "4 attempts" in message
    assert len(script.sent_at) == 4 and len(time.sleeps) == 3 and all(s >= 0.5 for s in time.sleeps)


def test_server_error_then_recovery_returns_the_answer() -> None:
    time = FakeTime()
    script = Script(time, httpx.Response(502), httpx.Response(500), OK)
    assert client_for(script).get_json("/x") == {"ok": True}
    assert len(script.sent_at) == 3


def test_connection_errors_are_retried_then_reported() -> None:
    time = FakeTime()
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    script = Script(time, refused, refused, refused)
    with pytest.raises(ExchangeUnavailable, match=r"could not be reached.*Connection refused"):
        client_for(script, max_attempts=3).get_json("/x")
    assert len(script.sent_at) == 3


@pytest.mark.parametrize(
    ("status", "body", "message", "code"),
    [
        (400, {"code": -1121, "msg": "Invalid symbol."}, "Invalid symbol.", -1121),
        (404, {"message": "NotFound"}, "NotFound", None),
        (400, {"error": "invalid vs_currency"}, "invalid vs_currency", None),
    ],
)
def test_client_errors_raise_at_once_with_the_exchange_message(
    status: int, body: object, message: str, code: int | None
) -> None:
    time = FakeTime()
    script = Script(time, httpx.Response(status, json=body))
    with pytest.raises(ExchangeRequestError) as raised:
        client_for(script).get_json("/x")
    assert raised.value.status == status
    assert raised.value.exchange_message == message and raised.value.code == code
    assert message in str(raised.value)
    assert len(script.sent_at) == 1 and time.sleeps == []


def test_json_numbers_become_exact_decimals() -> None:
    time = FakeTime()
    script = Script(time, httpx.Response(200, text='{"p": 67187.33589365663918250001, "n": 3}'))
    data = client_for(script).get_json("/x")
    assert data == {"p": Decimal("67187.33589365663918250001"), "n": 3}
    assert isinstance(data["p"], Decimal)


def test_a_body_that_is_not_json_is_retried() -> None:
    time = FakeTime()
    script = Script(time, httpx.Response(200, text="<html>maintenance</html>"), OK)
    assert client_for(script).get_json("/x") == {"ok": True}


def test_json_array_items_keep_each_element_exact_text() -> None:
    text = '[ {"a":1,"p":1.10} ,{"a":2,"p":"2"}, [3] ]'
    items = list(json_array_items(text))
    assert [raw for _, raw in items] == ['{"a":1,"p":1.10}', '{"a":2,"p":"2"}', "[3]"]
    assert items[0][0] == {"a": 1, "p": Decimal("1.10")}
    assert list(json_array_items(" [ ] ")) == []
    with pytest.raises(ValueError):
        list(json_array_items('{"a": 1}'))


def test_params_are_sent_in_the_query() -> None:
    seen: list[httpx.URL] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return OK

    handler: Callable[[httpx.Request], httpx.Response] = answer
    client = RestClient("https://api.example.test/api", transport=httpx.MockTransport(handler))
    client.get_json("/v3/aggTrades", {"symbol": "BTCUSDT", "fromId": 5})
    assert seen[0].path == "/api/v3/aggTrades"
    assert dict(seen[0].params) == {"symbol": "BTCUSDT", "fromId": "5"}


def test_requests_are_paced_by_min_interval() -> None:
    time = FakeTime()
    script = Script(time, OK, OK, OK)
    client = client_for(script, min_interval_s=0.1)
    client.get_json("/x")
    time.now += 0.03  # the caller spent 30 ms between requests
    client.get_json("/x")
    client.get_json("/x")
    assert [round(b - a, 9) for a, b in zip(script.sent_at, script.sent_at[1:], strict=False)] == [0.1, 0.1]
