"""The shape every platform part has: install, start, health, stop, status."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from candlelake.config import Settings
from candlelake.platform import runtime


@dataclass(frozen=True)
class Port:
    number: int
    setting: str  # the environment variable that moves it, for error messages


@dataclass
class Status:
    name: str
    pid: int | None
    ports: list[int]
    healthy: bool
    detail: str = ""
    rss_kib: int = 0
    urls: list[str] = field(default_factory=list)


class Component(ABC):
    """One part of the platform. `start` is only called when the part is not running."""

    name: str = ""
    start_timeout: float = 120.0
    # Parts of one stage start together once every earlier stage is healthy (0: PostgreSQL; 1: what
    # needs only it, Kafka and Airflow's api-server; 2: everything that needs those).
    stage: int = 2

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def install(self) -> None:
        """Fetch or prepare what the part needs; idempotent and quick when already done."""

    @abstractmethod
    def ports(self) -> list[Port]:
        """Ports the part listens on (checked free before start)."""

    @abstractmethod
    def start(self) -> int:
        """Spawn the part detached (see runtime.spawn) and return its pid; do not wait."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when the part answers as it should. Must be quick and never raise."""

    def after_healthy(self) -> None:
        """One-off work once healthy (create topics, roles, users); idempotent."""

    def urls(self) -> list[str]:
        return []

    def login_hint(self) -> str:
        return ""

    def pid(self) -> int | None:
        return runtime.running_pid(self.settings, self.name)

    def stop(self) -> bool:
        return runtime.stop(self.settings, self.name)

    @property
    def log(self) -> Path:
        return runtime.log_path(self.settings, self.name)

    def status(self) -> Status:
        pid = self.pid()
        healthy = bool(pid) and self.healthy()
        detail = "healthy" if healthy else ("running, not healthy" if pid else "stopped")
        return Status(
            name=self.name,
            pid=pid,
            ports=[p.number for p in self.ports()],
            healthy=healthy,
            detail=detail,
            rss_kib=runtime.rss_kib(pid) if pid else 0,
            urls=self.urls(),
        )
