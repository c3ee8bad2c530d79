"""docker-compose.yaml and .env.example agree with config.py.

No Docker engine runs where we build, so the compose file cannot be started in tests; these checks catch
what drifts silently instead: a service missing, a variable config.py does not know (a typo there is
ignored by every container), a default or port that differs from the local platform's.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from candlelake.config import PROJECT_ROOT, load_settings

pytestmark = pytest.mark.unit

COMPOSE = PROJECT_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
CONFIG_SOURCE = PROJECT_ROOT / "include" / "candlelake" / "config.py"

SERVICES = {
    "kafka",
    "postgres",
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "stream",
    "producer",
    "reports",
    "mlflow",
    "scorer",
    "dashboard",
    "grafana",
}
LONG_RUNNING = SERVICES - {"airflow-init"}
# Service -> the Settings field of the port it publishes.
PUBLISHED_PORTS = {
    "kafka": "kafka_port",
    "postgres": "pg_port",
    "airflow-api-server": "airflow_port",
    "stream": "spark_ui_port",
    "reports": "reports_port",
    "mlflow": "mlflow_port",
    "dashboard": "dashboard_port",
}

NAME = r"CANDLELAKE_[A-Z0-9_]+"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message} ...; `$$` is compose's escaped dollar. The
# argument holds no braces: nested expressions (`${A:-x${B:-y}}`) are resolved innermost first.
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^{}]*))?\}")


def config_names() -> set[str]:
    """Every CANDLELAKE_* name config.py reads, from its source (so a new setting is seen at once)."""
    return set(re.findall(rf'"({NAME})"', CONFIG_SOURCE.read_text()))


def compose_text() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(compose_text())
    assert isinstance(loaded, dict)
    return loaded


def _resolve(match: re.Match[str], env: dict[str, str]) -> str:
    name, op, arg = match.group("name", "op", "arg")
    value = env.get(name)
    if op == ":-":
        return value or arg
    if op == "-":
        return arg if value is None else value
    if op in (":+", "+"):
        present = bool(value) if op == ":+" else value is not None
        return arg if present else ""
    return value or ""


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Resolve compose interpolation, nested ones too, with `env` (default empty): `${X:-d}` -> d, `$$` -> `$`."""
    while True:
        resolved = INTERPOLATION.sub(lambda m: _resolve(m, env or {}), value)
        if resolved == value:
            return resolved.replace("$$", "$")
        value = resolved


def env_example_names() -> dict[str, str]:
    """Variables listed in .env.example (set, or commented out as `# NAME=value`) with their values."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(rf"^#?\s*({NAME})=(.*)$", line.strip())
        if match:
            found[match.group(1)] = match.group(2).strip().strip('"').strip("'")
    return found


def test_config_source_lists_the_settings_we_expect() -> None:
    # Guards the parsing below: if config.py changes how it names variables, this fails first.
    names = config_names()
    assert {"CANDLELAKE_HOST", "CANDLELAKE_PG_PORT", "CANDLELAKE_DASHBOARD_PORT"} <= names
    assert len(names) >= 30


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= SERVICES


def test_kafka_image_is_pinned_to_the_configured_version(compose: dict[str, Any]) -> None:
    image = interpolate(compose["services"]["kafka"]["image"])
    assert image == f"apache/kafka:{load_settings({}).kafka_version}" == "apache/kafka:4.1.1"
    assert interpolate(compose["services"]["postgres"]["image"]) == "postgres:15"


def test_every_candlelake_variable_in_compose_is_known_to_config(compose: dict[str, Any]) -> None:
    known = config_names()
    used = set(re.findall(NAME, compose_text()))
    assert used, "the compose file uses no CANDLELAKE_* variable at all"
    assert used - known == set(), f"unknown to config.py: {sorted(used - known)}"
    # Every variable given to a container by name is a setting too (catches typos in environment keys).
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        keys = environment if isinstance(environment, dict) else [e.split("=", 1)[0] for e in environment]
        unknown = {k for k in keys if k.startswith("CANDLELAKE_")} - known
        assert not unknown, f"{name}: unknown settings {sorted(unknown)}"


def test_compose_defaults_equal_config_defaults() -> None:
    # `${CANDLELAKE_X:-d}` must give the same setting as config.py's own default for X.
    defaults = load_settings({})
    text = compose_text()
    checked = set()
    while matches := list(INTERPOLATION.finditer(text)):  # innermost first, then what holds them
        for match in matches:
            name, op, arg = match.group("name", "op", "arg")
            if not name.startswith("CANDLELAKE_"):
                continue
            assert op == ":-", f"${{{name}}} in the compose file has no default"
            assert load_settings({name: arg}) == defaults, f"compose default {name}={arg!r} differs from config.py"
            checked.add(name)
        text = INTERPOLATION.sub(lambda m: _resolve(m, {}), text)
    assert {"CANDLELAKE_REPORTS_PORT", "CANDLELAKE_DATA_DOCS_URL"} <= checked


def test_env_example_lists_exactly_the_variables_config_reads() -> None:
    listed = set(env_example_names())
    known = config_names()
    assert listed - known == set(), f".env.example has variables config.py does not read: {sorted(listed - known)}"
    assert known - listed == set(), f".env.example misses: {sorted(known - listed)}"


def test_env_example_values_are_the_defaults() -> None:
    # An unchanged copy of .env.example must change nothing (only uncommented lines take effect).
    active = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if re.match(rf"^{NAME}=", line):
            key, _, value = line.partition("=")
            active[key] = value.strip().strip('"').strip("'")
    defaults = load_settings({})
    for name, value in active.items():
        assert load_settings({name: value}) == defaults, f".env.example {name}={value!r} is not config.py's default"
    # Commented lines show their (derived) default too.
    for name, value in env_example_names().items():
        if name not in active:
            assert value, f"{name} is listed without an example value"


def test_env_example_comments_every_variable() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(rf"^#?\s*({NAME})=", line)
        if match:
            above = lines[i - 1] if i else ""
            assert above.startswith("# ") and not re.match(rf"^#\s*{NAME}=", above), (
                f"{match.group(1)} has no comment line above it"
            )


def _published(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) pairs from short ("ip:host:container") or long port syntax."""
    pairs = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            pairs.append((int(interpolate(str(entry["published"]))), int(interpolate(str(entry["target"])))))
        else:
            parts = interpolate(str(entry)).split(":")
            pairs.append((int(parts[-2]), int(parts[-1].split("/")[0])))
    return pairs


@pytest.mark.parametrize(("service", "field"), sorted(PUBLISHED_PORTS.items()))
def test_published_ports_match_config_defaults(compose: dict[str, Any], service: str, field: str) -> None:
    port = getattr(load_settings({}), field)
    published = _published(compose["services"][service])
    assert (port, port) in published, f"{service} publishes {published}, config.py's {field} is {port}"


def test_published_ports_listen_on_loopback_only(compose: dict[str, Any]) -> None:
    # The defaults (admin/admin, well-known database passwords) are for one machine.
    for name, service in compose["services"].items():
        for entry in service.get("ports", []):
            assert str(entry).startswith("127.0.0.1:"), f"{name} publishes {entry} on every interface"


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        assert compose["services"][name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_dependencies_exist_and_wait_on_a_condition(compose: dict[str, Any]) -> None:
    services = compose["services"]
    conditions = {"service_healthy", "service_completed_successfully", "service_started"}
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions (mapping form)"
        for dependency, spec in depends.items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert spec.get("condition") in conditions, f"{name} -> {dependency} has no condition"
            if dependency in LONG_RUNNING:
                assert spec["condition"] == "service_healthy", f"{name} should wait for {dependency} healthy"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_services_run_files_that_exist(compose: dict[str, Any]) -> None:
    text = compose_text()
    for relative in ("dashboard/app.py", "jobs/produce.py"):
        assert relative in text and (PROJECT_ROOT / relative).is_file()
    assert (PROJECT_ROOT / "Dockerfile").is_file()


def test_dashboard_runs_with_the_component_flags(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # Docker and `candlelake up` must serve the same dashboard: same flags, only the address differs.
    from candlelake.platform import runtime
    from candlelake.platform.dashboard import DashboardComponent

    captured: list[list[str]] = []
    monkeypatch.setattr(runtime, "spawn", lambda _settings, _name, argv, **_kw: captured.append(list(argv)) or 0)
    DashboardComponent(load_settings({})).start()
    local = captured[0][1:]
    docker = [interpolate(str(a)) for a in compose["services"]["dashboard"]["command"]][1:]
    local[1] = docker[1] = "dashboard/app.py"  # absolute locally, relative to the image's workdir
    local[local.index("--server.address") + 1] = docker[docker.index("--server.address") + 1] = "<address>"
    assert local == docker


def _reports_dir_in_containers(compose: dict[str, Any]) -> str:
    return str(compose["x-candlelake-env"]["CANDLELAKE_REPORTS_DIR"])


def test_reports_runs_with_the_component_command(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Docker and `candlelake up` serve the Data Docs the same way: only the interpreter, address and folder
    # differ, and in Docker the folder is the one the settings name.
    from candlelake.platform import runtime
    from candlelake.platform.reports import ReportsComponent

    captured: list[list[str]] = []
    monkeypatch.setattr(runtime, "spawn", lambda _settings, _name, argv, **_kw: captured.append(list(argv)) or 0)
    settings = load_settings({"CANDLELAKE_RUNTIME_DIR": str(tmp_path)})
    ReportsComponent(settings).start()
    assert (settings.reports_dir / "data_docs").is_dir()  # served before any validation ran
    local = captured[0]
    docker = [interpolate(str(a)) for a in compose["services"]["reports"]["command"]]
    assert local[0] == sys.executable and docker[0] == "python"
    # Only the site is served: Great Expectations keeps its configuration beside it.
    assert local[local.index("--directory") + 1] == str(settings.reports_dir / "data_docs")
    assert docker[docker.index("--directory") + 1] == f"{_reports_dir_in_containers(compose)}/data_docs"
    for argv in (local, docker):
        argv[0] = "<python>"
        argv[argv.index("--bind") + 1] = "<address>"
        argv[argv.index("--directory") + 1] = "<reports dir>"
    assert local == docker


def test_reports_folder_is_shared_by_the_validating_scheduler_and_the_server(compose: dict[str, Any]) -> None:
    mount = f"reports:{_reports_dir_in_containers(compose)}"
    for service in ("airflow-scheduler", "reports"):
        assert mount in compose["services"][service]["volumes"], f"{service} does not mount {mount}"


def test_data_docs_links_in_containers_point_at_the_published_reports_port(compose: dict[str, Any]) -> None:
    # Containers reach PostgreSQL as CANDLELAKE_HOST=postgres, but the dashboard's links open in a browser
    # on the host: the URL follows the published port, and a user's own URL wins.
    value = str(compose["x-candlelake-env"]["CANDLELAKE_DATA_DOCS_URL"])
    assert interpolate(value) == load_settings({}).data_docs_url == "http://127.0.0.1:8502"
    assert interpolate(value, {"CANDLELAKE_REPORTS_PORT": "9502"}) == "http://127.0.0.1:9502"
    mine = "https://reports.example.org/candlelake"
    assert interpolate(value, {"CANDLELAKE_DATA_DOCS_URL": mine, "CANDLELAKE_REPORTS_PORT": "9502"}) == mine


def test_mlflow_runs_with_the_component_flags(compose: dict[str, Any], tmp_path: Path) -> None:
    # The same server in both: same store (the mlflow database), one worker; only addresses and paths differ.
    from candlelake.platform.mlflow_ui import MlflowComponent

    local = MlflowComponent(load_settings({"CANDLELAKE_RUNTIME_DIR": str(tmp_path)})).argv()[1:]
    docker = [interpolate(str(a)) for a in compose["services"]["mlflow"]["command"]][1:]
    assert docker[-2:] == ["--allowed-hosts", "*"]  # requests arrive under the host's name
    docker = docker[:-2]
    for flag in ("--host", "--default-artifact-root"):
        local[local.index(flag) + 1] = docker[docker.index(flag) + 1] = "<differs>"
    uri = docker.index("--backend-store-uri") + 1
    assert docker[uri] == load_settings({}).mlflow_tracking_uri.replace("@127.0.0.1:", "@postgres:")
    local[uri] = docker[uri] = "<store>"
    assert local == docker
    volumes = compose["services"]["airflow-scheduler"]["volumes"]
    assert "mlflow-artifacts:/opt/candlelake/.runtime/mlflow-artifacts" in volumes  # the training tasks write it


def test_kafka_init_creates_every_topic_the_platform_creates(compose: dict[str, Any]) -> None:
    from candlelake.platform.kafka import KafkaComponent

    script = interpolate(compose["services"]["kafka-init"]["command"][0])
    created = set(re.findall(r'^\s*topic "([^"]+)"', script, re.MULTILINE))
    assert created == set(KafkaComponent(load_settings({})).topic_specs())
