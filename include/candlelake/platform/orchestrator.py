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
    from candlelake.platform.mlflow_ui import MlflowComponent
    from candlelake.platform.postgres import PostgresComponent
    from candlelake.platform.producer import ProducerComponent
    from candlelake.platform.reports import ReportsComponent
    from candlelake.platform.scorer import ScorerComponent
    from candlelake.platform.stream import StreamComponent

    return [
        PostgresComponent(settings),
        KafkaComponent(settings),
        *airflow_components(settings),
        MlflowComponent(settings),
        StreamComponent(settings),
        ProducerComponent(settings),
        ScorerComponent(settings),
        ReportsComponent(settings),
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
    """Install what is missing, then start each part that is not running and wait until it is healthy.

    Parts start stage by stage (see Component.stage): within a stage they all start at once and are
    then waited for, which overlaps their slow start-ups (JVMs, Airflow's imports).
    """
    install(parts, say)
    for stage in sorted({p.stage for p in parts}):
        waiting: list[tuple[Component, int, float]] = []
        for part in (p for p in parts if p.stage == stage):
            pid = part.pid()
            if pid and part.healthy():
                say(f"  {part.name:<22} already running (pid {pid})")
                part.after_healthy()
                continue
            started = time.monotonic()
            if pid is None:
                for port in part.ports():
                    runtime.ensure_port_free(part.name, part.settings.host, port.number, port.setting)
                pid = part.start()
                say(f"  {part.name:<22} starting (pid {pid}) ...")
            else:
                say(f"  {part.name:<22} running (pid {pid}), waiting until healthy ...")
            waiting.append((part, pid, started))
        for part, pid, started in waiting:
            runtime.wait_until(part.name, part.healthy, part.start_timeout, log=part.log, pid=pid)
            part.after_healthy()
            say(f"  {part.name:<22} healthy after {time.monotonic() - started:.1f}s")
    return [p.status() for p in parts]


def down(parts: list[Component], say: Callable[[str], None]) -> None:
    """Stop in reverse start order; quiet and successful when nothing runs."""
    for part in reversed(parts):
        if part.stop():
            say(f"  stopped {part.name}")


def status(parts: list[Component]) -> list[Status]:
    return [p.status() for p in parts]
