"""A small JSON-over-HTTP client that respects exchange rate limits and fails in one readable line.

Binance's rules, which the other exchanges' are a subset of: a 429 or 418 answer carries `Retry-After`,
the seconds to wait (after a 429, to avoid a ban; after a 418, until the ban ends), and bans grow from
2 minutes to 3 days for clients that keep asking. So a 429/418 makes every later request of this client
(any path, any thread) wait until the time the exchange named, measured on a monotonic clock from when
the answer arrived; a wait longer than `max_retry_after_s` is not shortened (that would ask again too
early) but reported as `ExchangeUnavailable`. A 429 without `Retry-After` (Coinbase, CoinGecko) backs
off exponentially. `min_interval_s` paces requests below a documented limit (Coinbase: 10 public
requests a second) so that a long backfill does not run into 429s in the first place.

5xx answers, invalid JSON and connection errors are retried with exponential backoff plus jitter,
`max_attempts` in all; any other 4xx is the caller's mistake and raises `ExchangeRequestError` at once,
with the exchange's own words (`{"code": -1121, "msg": "Invalid symbol."}` from Binance,
`{"message": "NotFound"}` from Coinbase). Bodies are parsed with `parse_float=Decimal`, so a price sent
as a JSON number never passes through a binary float.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from candlelake.util import now_us

log = logging.getLogger(__name__)

Params = Mapping[str, str | int]

RATE_LIMITED = 429
BANNED = 418  # Binance: an IP ban for not backing off after 429s
USER_AGENT = "candlelake/0.1 (+https://github.com/candlelake)"


class ExchangeError(Exception):
    """Base of the errors a REST call raises; the text is one line a person can act on."""


class ExchangeUnavailable(ExchangeError):
    """The exchange did not answer usefully (down, unreachable, or asks us to wait too long)."""


class ExchangeRequestError(ExchangeError):
    """The exchange refused the request (a 4xx other than 429/418): `exchange_message` is its reason."""

    def __init__(self, message: str, *, status: int, exchange_message: str, code: int | str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.exchange_message = exchange_message
        self.code = code


@dataclass(frozen=True)
class JsonResponse:
    """A parsed answer: `data` (Decimal for JSON fractions), the raw `text`, headers, and arrival time."""

    data: Any
    text: str
    headers: Mapping[str, str]
    received_us: int  # wall clock, epoch microseconds: the time a ticker without its own time field is from


class _Retryable(Exception):
    """An attempt that may succeed if repeated; `retry_after` is the wait the server asked for, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RestClient:
    """GET JSON from one exchange's REST API, retrying what is worth retrying and nothing else.

    `sleep` and `clock` (monotonic seconds) are injectable so that tests can check waits exactly;
    `transport` lets a test answer without sockets (`httpx.MockTransport`). Counters `rate_limited`
    (429s) and `banned` (418s) tell an operator how often the exchange pushed back.
    """

    def __init__(
        self,
        base_url: str,
        *,
        name: str | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 300.0,
        min_interval_s: float = 0.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.name = name or urlsplit(self.base_url).netloc or self.base_url
        self.max_attempts = max_attempts
        self.max_retry_after_s = max_retry_after_s
        self.min_interval_s = min_interval_s
        self.rate_limited = 0
        self.banned = 0
        self._sleep = sleep
        self._clock = clock
        # Exponential from backoff_s with up to backoff_s of jitter on top: never below the exponential
        # floor (no burst of near-immediate retries), and clients that failed together spread out.
        self._backoff = wait_exponential_jitter(multiplier=backoff_s, max=backoff_max_s, jitter=backoff_s)
        self._not_before = 0.0  # monotonic time before which no request may be sent (Retry-After)
        self._last_sent: float | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_s,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
            transport=transport,
        )

    def get_json(self, path: str, params: Params | None = None) -> Any:
        """The parsed JSON body of `GET path?params` (see `get`)."""
        return self.get(path, params).data

    def get(self, path: str, params: Params | None = None) -> JsonResponse:
        """`GET path?params`, retried on 429/418/5xx/connection errors; raises `ExchangeError`."""
        started = self._clock()
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            sleep=self._pause,
            reraise=True,
        )
        try:
            return retrying(self._attempt, path, params)
        except _Retryable as failure:
            spent = self._clock() - started
            raise ExchangeUnavailable(
                f"{self.name} {failure}; gave up after {self.max_attempts} attempts in {spent:.0f} s"
            ) from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wait(self, state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, _Retryable) and failure.retry_after is not None:
            with self._lock:  # exactly as long as the server asked, from when its answer came
                return max(0.0, self._not_before - self._clock())
        return float(self._backoff(state))

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._sleep(seconds)

    def _attempt(self, path: str, params: Params | None) -> JsonResponse:
        self._wait_for_turn(path)
        where = f"GET {path}"
        try:
            response = self._http.get(path, params=params)
        except httpx.TransportError as error:
            raise _Retryable(f"could not be reached at {self.base_url} ({type(error).__name__}: {error})") from None
        received_us = now_us()
        status = response.status_code
        if status in (RATE_LIMITED, BANNED):
            raise self._pushed_back(status, response, where)
        if status >= 500:
            raise _Retryable(f"answered HTTP {status} {response.reason_phrase} to {where}")
        if status >= 400:
            raise _request_error(self.name, where, response)
        try:
            data = json.loads(response.text, parse_float=Decimal)
        except ValueError:
            raise _Retryable(f"answered {where} with a body that is not JSON: {_snippet(response.text)}") from None
        return JsonResponse(data, response.text, response.headers, received_us)

    def _wait_for_turn(self, path: str) -> None:
        """Sleep until Retry-After has passed and `min_interval_s` since the last request, then claim the slot."""
        with self._lock:
            now = self._clock()
            pushed_back = self._not_before - now
            if pushed_back > self.max_retry_after_s:
                raise ExchangeUnavailable(
                    f"{self.name} asked us to wait {pushed_back:.0f} s more before GET {path}, longer than the "
                    f"{self.max_retry_after_s:.0f} s this client waits; asking earlier would prolong a ban"
                )
            paced = self.min_interval_s - (now - self._last_sent) if self._last_sent is not None else 0.0
            delay = max(pushed_back, paced, 0.0)
            self._last_sent = now + delay
        self._pause(delay)

    def _pushed_back(self, status: int, response: httpx.Response, where: str) -> Exception:
        retry_after = _retry_after_s(response.headers.get("Retry-After"))
        what = "banned this IP (HTTP 418)" if status == BANNED else "rate limited us (HTTP 429)"
        with self._lock:
            if status == BANNED:
                self.banned += 1
            else:
                self.rate_limited += 1
            if retry_after is not None:
                self._not_before = max(self._not_before, self._clock() + retry_after)
        reason = _exchange_message(response)[0]
        if retry_after is not None and retry_after > self.max_retry_after_s:
            message = (
                f"{self.name} {what} on {where} for {retry_after:.0f} s, longer than the "
                f"{self.max_retry_after_s:.0f} s this client waits ({reason})"
            )
            log.warning("%s", message)
            return ExchangeUnavailable(message)
        if retry_after is None:
            log.warning("%s %s on %s, no Retry-After: backing off (%s)", self.name, what, where, reason)
        else:
            log.warning(
                "%s %s on %s: waiting %g s as Retry-After asks (%s)", self.name, what, where, retry_after, reason
            )
        return _Retryable(f"{what} on {where} ({reason})", retry_after)


def json_array_items(text: str) -> Iterator[tuple[Any, str]]:
    """Each element of a JSON array text, parsed (Decimal fractions) and as its exact text.

    The exact text is what a `Rejection` keeps, so a record that fails validation is stored as the
    exchange sent it, not as re-serialized Python.
    """
    decoder = json.JSONDecoder(parse_float=Decimal)
    end = len(text)
    index = _skip_space(text, 0)
    if index >= end or text[index] != "[":
        raise ValueError(f"not a JSON array: {_snippet(text)}")
    index = _skip_space(text, index + 1)
    if index < end and text[index] == "]":
        return
    while True:
        item, stop = decoder.raw_decode(text, index)
        yield item, text[index:stop]
        index = _skip_space(text, stop)
        if index < end and text[index] == ",":
            index = _skip_space(text, index + 1)
        elif index < end and text[index] == "]":
            return
        else:
            raise ValueError(f"malformed JSON array near character {index}")


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _retry_after_s(value: str | None) -> float | None:
    """`Retry-After` as seconds: delay-seconds (what exchanges send) or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _request_error(name: str, where: str, response: httpx.Response) -> ExchangeRequestError:
    message, code = _exchange_message(response)
    with_code = f"{message} (code {code})" if code is not None else message
    return ExchangeRequestError(
        f"{name} refused {where}: HTTP {response.status_code}: {with_code}",
        status=response.status_code,
        exchange_message=message,
        code=code,
    )


def _exchange_message(response: httpx.Response) -> tuple[str, int | str | None]:
    """The exchange's own reason and code: Binance `msg`/`code`, Coinbase `message`, CoinGecko `error`."""
    try:
        body = json.loads(response.text, parse_float=Decimal)
    except ValueError:
        return _snippet(response.text) or response.reason_phrase, None
    if isinstance(body, dict):
        status = body.get("status")
        if isinstance(status, dict) and "error_message" in status:  # CoinGecko's 429
            return str(status["error_message"]), status.get("error_code")
        for key in ("msg", "message", "error"):
            if isinstance(body.get(key), str):
                return body[key], body.get("code")
    return _snippet(response.text), None


def _snippet(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"
