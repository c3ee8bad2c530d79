"""Resolve pinned JVM artifacts from Maven Central with the machine's `mvn`, once, into the project.

Each part that needs jars has a `pom.xml` under `build/maven/<name>/` listing its pinned artifacts.
`resolve()` copies the artifacts and their runtime dependencies into `<cache>/jars/<name>/`, using a
project-local Maven repository, and writes a stamp keyed by the pom's content so later runs do
nothing (no network) until the pom changes.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from candlelake.config import Settings
from candlelake.platform.runtime import ComponentError


def pom_path(settings: Settings, name: str) -> Path:
    return settings.project_root / "build" / "maven" / name / "pom.xml"


def jars_dir(settings: Settings, name: str) -> Path:
    return settings.jars_dir / name


def resolve(settings: Settings, name: str, part: str) -> Path:
    """Make sure `<cache>/jars/<name>/` holds the pom's artifacts; return that folder."""
    pom = pom_path(settings, name)
    dest = jars_dir(settings, name)
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = dest / ".resolved"
    if stamp.is_file() and stamp.read_text().strip() == digest and any(dest.glob("*.jar")):
        return dest
    mvn = shutil.which("mvn")
    if not mvn:
        raise ComponentError(part, "Maven (`mvn`) is not installed; install it (Debian: apt-get install maven)")
    if not shutil.which("java"):
        raise ComponentError(part, "Java is not installed; install a JDK 17 or newer (Debian: openjdk-17-jdk)")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    log = settings.logs_dir / f"maven-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"-Dmaven.repo.local={settings.cache_dir / 'm2'}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    with open(log, "w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0 or not any(tmp.glob("*.jar")):
        raise ComponentError(
            part,
            f"Maven could not resolve the pinned artifacts of {pom.relative_to(settings.project_root)}. "
            "Check that Maven Central is reachable (or a mirror in ~/.m2/settings.xml) and retry",
            log,
        )
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    stamp.write_text(digest + "\n")
    return dest
