"""Keep the virtual environment in step with requirements.txt before anything starts.

`make setup` creates the environment; `candlelake up` and `install` call `ensure()` so that a pull that
changed the pins is installed before the parts start (uv answers in about 0.1 s when nothing changed).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from candlelake.config import Settings
from candlelake.platform.runtime import ComponentError

PART = "python"


def ensure(settings: Settings, say: Callable[[str], None]) -> None:
    """Install requirements.txt into the running interpreter's environment when anything is missing."""
    uv = Path(sys.executable).parent / "uv"
    requirements = settings.project_root / "requirements.txt"
    if not uv.is_file() or not requirements.is_file():
        return  # not a `make setup` environment (e.g. a container image built with pip): nothing to keep
    log = settings.logs_dir / "python-deps.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        result = subprocess.run(
            [str(uv), "pip", "install", "--python", sys.executable, "-r", str(requirements)],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise ComponentError(PART, "installing requirements.txt failed; is the package index reachable?", log)
    if "Installed" in log.read_text():
        say("  python dependencies updated from requirements.txt")
