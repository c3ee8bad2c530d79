"""Bring the whole platform up in dependency order, down in reverse, and report each part's status."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from candlelake.config import Settings
from candlelake.platform import runtime
from candlelake.platform.base import Component, Status
from candlelake.platform.runtime import ComponentError


def components(settings: Settings) -> list[Component]:
    """Every part, in start order: storage first, then what reads and writes it, the UI last."""
    # Imported here so that `candlelake candles` and friends do not pay for every part's imports.
    from candlelake.platform.airflow import airflow_components
    from candlelake.platform.dashboard import DashboardComponent
    from candlelake.platform.kafka import KafkaComponent
    from candlelake.platform.postgres import PostgresComponent
    from candlelake.platform.producer import ProducerComponent
    from candlelake.platform.stream import StreamComponent

    return [
        PostgresComponent(settings),
        KafkaComponent(settings),
        *airflow_components(settings),
        StreamComponent(settings),
        ProducerComponent(settings),
        DashboardComponent(settings),
    ]


def select(parts: Iterable[Component], only: set[str] | None) -> list[Component]:
    chosen = [c for c in parts if not only or c.name in only]
    if only:
        unknown = only - {c.name for c in chosen}
        if unknown:
            raise ComponentError("candlelake", f"unknown part(s) {', '.join(sorted(unknown))}")
    return chosen


def install(parts: list[Component], say: Callable[[str], None]) -> None:
    for part in parts:
        started = time.monotonic()
        part.install()
        took = time.monotonic() - started
        if took > 1:
            say(f"  installed {part.name} in {took:.0f}s")


def up(parts: list[Component], say: Callable[[str], None]) -> list[Status]:
    """Install what is missing, then start each part that is not running and wait until it is healthy."""
    install(parts, say)
    for part in parts:
        pid = part.pid()
        if pid and part.healthy():
            say(f"  {part.name:<18} already running (pid {pid})")
            part.after_healthy()
            continue
        if pid is None:
            for port in part.ports():
                runtime.ensure_port_free(part.name, part.settings.host, port.number, port.setting)
            started = time.monotonic()
            pid = part.start()
            say(f"  {part.name:<18} starting (pid {pid}) ...")
        else:
            started = time.monotonic()
            say(f"  {part.name:<18} running (pid {pid}), waiting until healthy ...")
        runtime.wait_until(part.name, part.healthy, part.start_timeout, log=part.log, pid=pid)
        part.after_healthy()
        say(f"  {part.name:<18} healthy after {time.monotonic() - started:.1f}s")
    return [p.status() for p in parts]


def down(parts: list[Component], say: Callable[[str], None]) -> None:
    """Stop in reverse start order; quiet and successful when nothing runs."""
    for part in reversed(parts):
        if part.stop():
            say(f"  stopped {part.name}")


def status(parts: list[Component]) -> list[Status]:
    return [p.status() for p in parts]
