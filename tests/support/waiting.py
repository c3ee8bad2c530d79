"""Waiting for a condition, not for a guessed number of seconds: the tests' one poll loop.

A test that sleeps "long enough" is slow when the machine is idle and flaky when it is busy; these
return as soon as the condition holds and fail, naming what they waited for, when it never does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _describe(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    what: str | Callable[[], str] = "the condition",
    *,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` every `interval` s until it returns something truthy, and return that.

    After `timeout` s an AssertionError says what was waited for (`what`; a callable is asked then, so
    the message can hold the state seen last, e.g. a log). Exceptions of the `ignoring` types count as
    "not yet". The predicate is always tried once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        try:
            value = predicate()
        except ignoring:
            value = None
        if value:
            return value
        if last_try:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_describe(what)}")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


async def wait_until_async(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.02,
    what: str | Callable[[], str] = "the condition",
) -> T:
    """`wait_until` inside an event loop: the loop keeps running (feeds, fake servers) between tries."""
    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if last_try:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_describe(what)}")
        await asyncio.sleep(max(0.0, min(interval, deadline - time.monotonic())))
