"""Process plumbing shared by every component: spawn detached, pid files, logs, health waits.

Every long-running part is started in its own session (process group) with stdout and stderr in
`<runtime>/logs/<name>.log` and its pid in `<runtime>/pids/<name>.pid`, so `down` can stop the whole
group (spark-submit's JVM and its Python driver, Airflow's workers) and `status` can find it again
from a different shell.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from candlelake.config import Settings


class ComponentError(RuntimeError):
    """A part of the platform failed; the message names the part, what to do and its log."""

    def __init__(self, part: str, message: str, log: Path | None = None) -> None:
        self.part = part
        self.log = log
        suffix = f" (log: {log})" if log else ""
        super().__init__(f"{part}: {message}{suffix}")


def log_path(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def pid_path(settings: Settings, name: str) -> Path:
    return settings.pids_dir / f"{name}.pid"


def read_pid(settings: Settings, name: str) -> int | None:
    path = pid_path(settings, name)
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes. Its main thread
    # turns zombie before the other threads have finished exiting, and they still hold its sockets: only
    # a zombie without them is gone (else `down` returns while a port is still taken).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" or len(os.listdir(f"/proc/{pid}/task")) > 1
    except (OSError, IndexError):
        return True


def running_pid(settings: Settings, name: str) -> int | None:
    """The pid of a part we started, if that process still runs."""
    pid = read_pid(settings, name)
    return pid if pid_alive(pid) else None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def ensure_port_free(part: str, host: str, port: int, setting: str) -> None:
    """Fail with a clear message when another program already listens on a port we need."""
    if port_open(host, port):
        raise ComponentError(
            part,
            f"port {port} on {host} is already in use by another program. Stop that program or choose "
            f"another port with {setting}=<port> in .env",
        )


def require_executable(part: str, path_or_name: str, hint: str) -> str:
    found = (
        path_or_name
        if os.path.isfile(path_or_name) and os.access(path_or_name, os.X_OK)
        else shutil.which(path_or_name)
    )
    if not found:
        raise ComponentError(part, f"{path_or_name} was not found. {hint}")
    return found


def spawn(
    settings: Settings,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> int:
    """Start `argv` detached in its own process group; return its pid (also written to the pid file)."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    settings.pids_dir.mkdir(parents=True, exist_ok=True)
    log = log_path(settings, name)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} starting: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(cwd or settings.project_root),
            env=dict(env) if env is not None else None,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    pid_path(settings, name).write_text(str(proc.pid))
    return proc.pid


def stop(settings: Settings, name: str, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
    """Stop a part's whole process group; SIGKILL after `timeout`. Returns True if it was running."""
    pid = read_pid(settings, name)
    was_running = pid_alive(pid)
    if pid and was_running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            while pid_alive(pid) and time.monotonic() < deadline + 10:
                time.sleep(0.1)
        # Children that left the group leader behind (e.g. a JVM after its launcher) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    pid_path(settings, name).unlink(missing_ok=True)
    return was_running


def wait_until(
    part: str,
    check: Callable[[], bool],
    timeout: float,
    log: Path | None = None,
    pid: int | None = None,
    what: str = "become healthy",
    interval: float = 0.5,
) -> None:
    """Poll `check` until it is true; fail naming the part and its log when time runs out or it dies."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            # Health checks report rather than raise (Component.healthy); one that lets a refused
            # connection, a timeout or a pid file not written yet through means "still starting", so
            # poll again. Anything else is a bug in the check: it surfaces instead of a silent timeout.
            pass
        if pid is not None and not pid_alive(pid):
            raise ComponentError(part, f"exited before it could {what}; its last log lines:\n{tail(log)}", log)
        if time.monotonic() > deadline:
            raise ComponentError(part, f"did not {what} within {timeout:.0f}s; its last log lines:\n{tail(log)}", log)
        time.sleep(interval)


def tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return "  (no log)"
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 16_384))
        text = handle.read().decode(errors="replace")
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


def rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB (0 when unknown)."""
    total = 0
    for child in [pid, *_descendants(pid)]:
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:  # exited meanwhile
            continue
    return total


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # a process may exit while we read /proc
            continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        nxt = children.get(frontier.pop(), [])
        found.extend(nxt)
        frontier.extend(nxt)
    return found
