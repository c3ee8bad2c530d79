"""What Grafana does to a PostgreSQL panel's SQL before PostgreSQL sees it, and to a provisioning value.

No Grafana server runs where we build, so tests/integration/test_grafana.py runs each panel's SQL after
these three steps, done here the way Grafana does them:

1. Template variables, in the browser (`templateSrv.replace` with the SQL datasource's
   `interpolateVariable`): `$name`, `${name}`, `${name:format}` and `[[name]]` become the value; a
   single-valued string has each `'` doubled and is *not* quoted (the dashboard writes `'$symbol'`);
   a variable that is not defined is left as it is.
2. Global macros, in the backend (sqleng `Interpolate`): `$__interval_ms`, `$__interval`,
   `$__unixEpochFrom()`, `$__unixEpochTo()`.
3. The PostgreSQL macro engine (pkg/tsdb/grafana-postgresql-datasource/macros.go): every
   `$name(args)` is a macro, args split on commas; `$__timeFilter(x)` is
   `x BETWEEN '<from>' AND '<to>'` and `$__timeFrom()`/`$__timeTo()` are `'<from>'`/`'<to>'`, times in
   UTC as Go's RFC3339Nano writes them (fraction without trailing zeros, none when zero, `Z`). An
   unknown macro is an error, as it is in Grafana.

Provisioning files (`interpolate_provisioning`): `$$` is a literal `$`; `$__env{NAME}` is expanded
first, then `$NAME` and `${NAME}` (Go's os.ExpandEnv: unset is empty).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MacroError(ValueError):
    """A macro Grafana would refuse (unknown, or missing its arguments)."""


@dataclass(frozen=True)
class TimeRange:
    """The dashboard's time range, as the panel query sends it (Grafana's from and to)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a Grafana time range is absolute: give timezone-aware datetimes")


def _unix_ns(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1) * 1000


def rfc3339_nano(t: datetime) -> str:
    """`t` in UTC as Go's time.RFC3339Nano formats it: 2018-04-12T18:00:00Z, 1960-02-01T07:00:00.5Z."""
    utc = t.astimezone(UTC)
    fraction = f"{utc.microsecond:06d}".rstrip("0")
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


# templateSrv's variable pattern: $name | [[name]] / [[name:format]] | ${name} / ${name.path} / ${name:format}
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")


def _format(value: str, fmt: str | None) -> str:
    if fmt is None:  # SqlDatasource.interpolateVariable, single value
        return value.replace("'", "''")
    if fmt == "raw":
        return value
    if fmt == "sqlstring":
        return "'" + value.replace("'", "''") + "'"
    raise MacroError(f"variable format {fmt!r} is not implemented here")


def interpolate_variables(sql: str, variables: Mapping[str, str]) -> str:
    """Step 1: substitute the dashboard's single-valued variables (names not in `variables` stay)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name not in variables:
            return match.group(0)
        if match.group(5):
            raise MacroError(f"field path in ${{{name}.{match.group(5)}}} is not implemented here")
        return _format(variables[name], fmt)

    return _VARIABLE.sub(replace, sql)


def _go_duration(interval: timedelta) -> str:
    """gtime.FormatInterval: the interval in its largest whole unit (2d, 1h, 30s, 20ms; at least 1ms)."""
    ms = interval // timedelta(milliseconds=1)
    for unit, size in (("y", 31_536_000_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return f"{max(ms, 1)}ms"


def interpolate_globals(sql: str, time_range: TimeRange, interval: timedelta) -> str:
    """Step 2: the macros every SQL datasource shares, replaced as plain text."""
    sql = sql.replace("$__interval_ms", str(interval // timedelta(milliseconds=1)))
    sql = sql.replace("$__interval", _go_duration(interval))
    sql = sql.replace("$__unixEpochFrom()", str(_unix_ns(time_range.start) // 10**9))
    return sql.replace("$__unixEpochTo()", str(_unix_ns(time_range.end) // 10**9))


_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "y": 31_536_000}


def _interval_seconds(text: str) -> float:
    """gtime.ParseInterval for the forms a dashboard writes ('5m', 1h, 30s)."""
    match = re.fullmatch(r"([0-9]+)(ms|s|m|h|d|w|y)", text.strip("'"))
    if match is None:
        raise MacroError(f"error parsing interval {text}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _go_float(x: float) -> str:
    """Go's %v of a float64: its shortest digits, in exponent form from 1e+06 up and below 1e-04."""
    sign, digits, exponent = Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(exponent, int)
    power = len(digits) + exponent - 1
    if -4 <= power < 6:
        return format(Decimal(repr(x)).normalize(), "f")
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{power:+03d}"


def _time_group(args: list[str]) -> str:
    if len(args) < 2:
        raise MacroError("macro __timeGroup needs time column and interval and optional fill value")
    if len(args) == 3:
        raise MacroError("__timeGroup's fill is done by Grafana's backend, not in SQL: not implemented here")
    seconds = _go_float(_interval_seconds(args[1]))
    return f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"


def _evaluate(name: str, args: list[str], time_range: TimeRange) -> str:
    start, end = rfc3339_nano(time_range.start), rfc3339_nano(time_range.end)
    needs_column = {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter", "__unixEpochNanoFilter"}
    if name in needs_column and not args[0]:
        raise MacroError(f"missing time column argument for macro {name}")
    start_ns, end_ns = _unix_ns(time_range.start), _unix_ns(time_range.end)
    start_s, end_s = start_ns // 10**9, end_ns // 10**9  # Go's Time.Unix() floors
    match name:
        case "__time":
            return f'{args[0]} AS "time"'
        case "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        case "__timeFilter":
            return f"{args[0]} BETWEEN '{start}' AND '{end}'"
        case "__timeFrom":
            return f"'{start}'"
        case "__timeTo":
            return f"'{end}'"
        case "__timeGroup":
            return _time_group(args)
        case "__timeGroupAlias":
            return _time_group(args) + ' AS "time"'
        case "__unixEpochFilter":
            return f"{args[0]} >= {start_s} AND {args[0]} <= {end_s}"
        case "__unixEpochNanoFilter":
            return f"{args[0]} >= {start_ns} AND {args[0]} <= {end_ns}"
        case "__unixEpochNanoFrom":
            return str(start_ns)
        case "__unixEpochNanoTo":
            return str(end_ns)
    raise MacroError(f'unknown macro "{name}"')


def expand_macros(sql: str, time_range: TimeRange) -> str:
    """Step 3: the PostgreSQL datasource's macro engine."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        # Grafana < 5.3 compatibility, kept by the engine: $__timeGroup(...) directly followed by a comma
        # is the aliased form.
        if name == "__timeGroup" and sql[match.end() : match.end() + 1] == ",":
            name = "__timeGroupAlias"
        return _evaluate(name, [a.strip(" ") for a in match.group(2).split(",")], time_range)

    return _MACRO.sub(replace, sql)


def render(
    sql: str, variables: Mapping[str, str], time_range: TimeRange, interval: timedelta = timedelta(minutes=1)
) -> str:
    """A panel's rawSql as PostgreSQL receives it from Grafana: the three steps, in Grafana's order."""
    return expand_macros(interpolate_globals(interpolate_variables(sql, variables), time_range, interval), time_range)


_EXPANDER = re.compile(r"\$__(\w+)\{(.*?)\}")
_ENV = re.compile(r"\$\{([^}]*)\}|\$([A-Za-z0-9_]+)")


def interpolate_provisioning(value: str, env: Mapping[str, str]) -> str:
    """A provisioning file's string value as Grafana reads it, with `env` as the process environment."""

    def expander(match: re.Match[str]) -> str:
        kind, argument = match.group(1), match.group(2)
        if kind == "env":
            return env.get(argument, "")
        raise MacroError(f"provisioning expander $__{kind} is not implemented here")

    parts = []
    for part in value.split("$$"):
        part = _EXPANDER.sub(expander, part)
        parts.append(_ENV.sub(lambda m: env.get(m.group(1) or m.group(2), ""), part))
    return "$".join(parts)
