"""Every environment variable a2a-quiescence reads, defined once: its name, default and one line of doc.

In the style of opentelemetry-python-contrib's ``environment_variables.py``, with
the defaults beside the names: the instrumentation, the collector, the clients
and the dashboards command read their settings through these ``Variable``
objects (``get``; the collector's flags through ``cli_default``), never through
``os.environ`` directly, and docs/configuration.md is generated from
``VARIABLES`` (tests/test_configuration.py checks both):

    python -m a2a_quiescence.environment_variables           # write docs/configuration.md
    python -m a2a_quiescence.environment_variables --check   # exit 1 when it is stale

A variable's constant is its name without the ``A2A_QUIESCENCE_`` prefix
(``ENDPOINT`` is ``A2A_QUIESCENCE_ENDPOINT``); the OpenTelemetry variables keep
their whole name. An unset or empty variable has its default.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from a2a_quiescence import names

logger = logging.getLogger(__name__)

PREFIX = "A2A_QUIESCENCE_"
# who reads a variable (the docs' "read by" column)
AGENT = "agent"  # the instrumentation, inside the agent process
COLLECTOR = "collector"  # `a2a-quiescence collector`
WAIT = "wait"  # `a2a-quiescence wait` and a2a_quiescence.wait
PYTEST = "pytest"  # the pytest plugin
DASHBOARDS = "dashboards push"  # `a2a-quiescence dashboards push`

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
KINDS = ("str", "int", "float", "bool", "list")


@dataclass(frozen=True)
class Variable:
    """One environment variable: ``get`` reads it (typed by ``kind``; its default when unset or empty)."""

    name: str
    default: Any
    doc: str
    read_by: tuple[str, ...]
    kind: str = "str"
    flag: str | None = None  # the collector flag whose default it sets (A2A_QUIESCENCE_<FLAG>)
    shown: str | None = None  # the docs' default, when it is more than the value (e.g. derived)

    def raw(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The text set, or None when unset or empty."""
        return (os.environ if environ is None else environ).get(self.name) or None

    def get(self, environ: Mapping[str, str] | None = None) -> Any:
        raw = self.raw(environ)
        if raw is None:
            return self.default
        if self.kind == "bool":
            word = raw.strip().lower()
            return True if word in TRUE else False if word in FALSE else self.default
        if self.kind == "list":  # comma-separated, as the OpenTelemetry variables are
            return [item.strip() for item in raw.split(",") if item.strip()]
        if self.kind in ("int", "float"):
            try:
                return int(raw) if self.kind == "int" else float(raw)
            except ValueError:
                raise ValueError(f"{self.name}={raw!r}: not a number") from None
        return raw

    def cli_default(self) -> Any:
        """An argparse default: the text set (argparse converts and checks it as it does a
        flag's value), else the default."""
        return self.raw() if self.raw() is not None else self.default

    def setdefault(self, value: str) -> None:
        """Set it in this process's environment unless it is set (for a library that reads it later)."""
        os.environ.setdefault(self.name, value)

    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return "`true`" if self.default else "`false`"
        if isinstance(self.default, float) and self.default.is_integer():
            return f"`{self.default:.0f}`"
        return f"`{self.default}`"


VARIABLES: list[Variable] = []


def _define(name: str, default: Any, doc: str, *read_by: str, kind: str = "str", flag: str | None = None,
            shown: str | None = None) -> Variable:
    variable = Variable(name, default, doc, read_by, kind, flag, shown)
    VARIABLES.append(variable)
    return variable


def _flag(flag: str, default: Any, doc: str, *also: str, kind: str = "str") -> Variable:
    """A collector flag's variable: A2A_QUIESCENCE_<FLAG> (upper case, dashes as underscores)."""
    return _define(PREFIX + flag.lstrip("-").upper().replace("-", "_"), default, doc, COLLECTOR, *also,
                   kind=kind, flag=flag)


# --- the agent (the instrumentation) ---------------------------------------------------------
ENDPOINT = _define(
    PREFIX + "ENDPOINT", f"http://{names.DEFAULT_OTLP_HTTP}/v1/logs",
    "OTLP/HTTP logs URL the lifecycle snapshots are sent to; `none` sends none", AGENT, PYTEST,
    shown=f"`OTEL_EXPORTER_OTLP_[LOGS_]ENDPOINT` when the protocol is `http/protobuf`, else "
          f"`http://{names.DEFAULT_OTLP_HTTP}/v1/logs`")
STALL_SECONDS = _define(
    PREFIX + "STALL_SECONDS", 5.0, "seconds a producer or `EventQueue.close` may park before the stall watchdog "
    "reports it", AGENT, kind="float")
FLUSH_MS = _define(
    PREFIX + "FLUSH_MS", 5.0, "coalescing delay after a change that can settle a cascade (a hop going passive, "
    "a root request, a shutdown)", AGENT, kind="float")
LAZY_MS = _define(PREFIX + "LAZY_MS", 200.0, "how late every other change (activity, counters) may ship", AGENT,
                  kind="float")
COALESCE_MS = _define(
    PREFIX + "COALESCE_MS", 20.0, "under load, prompt exports at least this far apart (the cap of the reporter's "
    "adaptive window)", AGENT, kind="float")
LOOP_EXPORT = _define(
    PREFIX + "LOOP_EXPORT", True, "`false`: prompt exports go through the reporter thread, as before 2026-12-06, "
    "instead of a callback on the agent's event loop (plain HTTP only)", AGENT, kind="bool")
HEARTBEAT_SECONDS = _define(PREFIX + "HEARTBEAT_SECONDS", 2.0, "seconds between an idle hop's heartbeats", AGENT,
                            kind="float")
CALL_SPANS = _define(
    PREFIX + "CALL_SPANS", True, "`false`: make no A2A CLIENT/SERVER call spans, leaving them to another A2A "
    "instrumentation (snapshots, propagation and lifecycle spans stay)", AGENT, kind="bool")
ALLOW_UNTESTED = _define(
    PREFIX + "ALLOW_UNTESTED", False, "`1`: instrument an a2a-sdk or fasta2a release newer than every tested one "
    "(else refused)", AGENT, kind="bool")
DISABLED = _define(
    PREFIX + "DISABLED", False, "deprecated (a warning says so): the same switch as "
    "`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=a2a_quiescence`, except that the instrumentor is loaded and patches "
    "nothing", AGENT, kind="bool")
OTEL_PYTHON_DISABLED_INSTRUMENTATIONS = _define(
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", [],
    f"OpenTelemetry's: `{names.ENTRY_POINT}` (the entry point's name) or `*` switches the instrumentation off "
    "(`opentelemetry-instrument` does not load it; `instrument()` patches nothing)", AGENT, kind="list",
    shown="unset")
OTEL_SEMCONV_STABILITY_OPT_IN = _define(
    "OTEL_SEMCONV_STABILITY_OPT_IN", [], f"OpenTelemetry's: `{names.SEMCONV_OPT_A2A_DUP}` also emits the attribute "
    "names from before the A2A conventions (docs/telemetry.md)", AGENT, kind="list", shown="unset")
OTEL_INSTRUMENTATION_A2A_SDK_ENABLED = _define(
    "OTEL_INSTRUMENTATION_A2A_SDK_ENABLED", "false", "a2a-sdk's own tracing, read by a2a-sdk: set to `false` by "
    "the instrumentation unless set (`true` keeps it on)", AGENT)
OTEL_SERVICE_NAME = _define(
    "OTEL_SERVICE_NAME", "unknown_service", "the hop's name when the tracer provider's resource has none "
    "(the pytest gate's root hop: `pytest` when unset)", AGENT, PYTEST)
OTEL_EXPORTER_OTLP_LOGS_PROTOCOL = _define(
    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", None, "OpenTelemetry's: an `http/...` protocol lets the snapshots follow "
    "the OTLP logs endpoint", AGENT)
OTEL_EXPORTER_OTLP_PROTOCOL = _define(
    "OTEL_EXPORTER_OTLP_PROTOCOL", None, "OpenTelemetry's: as `OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`, for every signal",
    AGENT)
OTEL_EXPORTER_OTLP_LOGS_ENDPOINT = _define(
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", None, "OpenTelemetry's: the snapshots' URL when the protocol is HTTP and "
    "`A2A_QUIESCENCE_ENDPOINT` is unset", AGENT)
OTEL_EXPORTER_OTLP_ENDPOINT = _define(
    "OTEL_EXPORTER_OTLP_ENDPOINT", None, "OpenTelemetry's: with an HTTP protocol the snapshots go to its "
    "`/v1/logs`", AGENT)
OTEL_EXPORTER_OTLP_LOGS_HEADERS = _define(
    "OTEL_EXPORTER_OTLP_LOGS_HEADERS", None, "OpenTelemetry's: `key=value,...` headers sent with the snapshots",
    AGENT)
OTEL_EXPORTER_OTLP_HEADERS = _define(
    "OTEL_EXPORTER_OTLP_HEADERS", None, "OpenTelemetry's: as `OTEL_EXPORTER_OTLP_LOGS_HEADERS`, for every signal",
    AGENT)

# --- the collector's flags (`a2a-quiescence collector --help`), and the clients' -------------
OTLP_LISTEN = _flag("--otlp-listen", names.DEFAULT_OTLP_HTTP, "HOST:PORT for OTLP/HTTP; `off` disables")
OTLP_GRPC_LISTEN = _flag("--otlp-grpc-listen", names.DEFAULT_OTLP_GRPC, "HOST:PORT for OTLP/gRPC; `off` disables")
HTTP_LISTEN = _flag("--http-listen", names.DEFAULT_HTTP,
                    "HOST:PORT for /metrics, /healthz, /readyz, the settlement API and the status page")
ALLOW_REMOTE = _flag("--allow-remote", False, "`1`: permit listening on non-loopback addresses", kind="bool")
TOKEN = _flag("--token", None, "bearer token: required by the collector on ingest and `/v1`, sent by the agent "
              "and the clients", AGENT, WAIT, PYTEST)
TOKEN_FILE = _flag("--token-file", None, "read the collector's bearer token from this file")
MAX_BODY_BYTES = _flag("--max-body-bytes", 4 * 1024 * 1024,
                       "largest accepted request body, before and after decompression (413 above)", kind="int")
MAX_AGENTS = _flag("--max-agents", 1000, "agents tracked at most (oldest evicted, counted)", kind="int")
MAX_CASCADES = _flag("--max-cascades", 100_000, "cascades tracked at most (oldest evicted, counted)", kind="int")
STUCK_AFTER = _flag("--stuck-after", 30.0, "seconds without progress after which an open cascade is stuck",
                    kind="float")
ROOT_GRACE = _flag("--root-grace", 0.05, "default grace of a mesh wait: seconds after its window during which "
                   "root requests received in it may still be reported", WAIT, kind="float")
RETENTION = _flag("--retention", 300.0, "seconds a settled cascade stays queryable in detail", kind="float")
AGENT_TIMEOUT = _flag("--agent-timeout", 10.0, "seconds of silence after which an agent process counts as gone "
                      "(its in-flight producers as leaked)", kind="float")
FORWARD = _flag("--forward", None, "base URL of an upstream OTLP/HTTP endpoint everything is forwarded to")
FORWARD_TOKEN = _flag("--forward-token", None, "bearer token sent upstream when forwarding")
FORWARD_QUEUE = _flag("--forward-queue", 1000, "requests held for forwarding at most (beyond: dropped, counted)",
                      kind="int")
FORWARD_CONCURRENCY = _flag("--forward-concurrency", 4, "requests forwarded at a time", kind="int")
SHARDS = _flag("--shards", None, "a mesh tier's shard set (docs/scale-out.md): the collector's, and the one "
               "`wait` and the pytest plugin ask instead of one collector", WAIT, PYTEST)
SHARD_NAME = _flag("--shard-name", None, "this shard's ring endpoint exactly as the exporter names it")
RING_PORT = _flag("--ring-port", names.OTLP_GRPC_PORT, "the shards' OTLP/gRPC port: "
                  "the ring endpoint of a shard given by URL is HOST:RING_PORT", WAIT, kind="int")
RING_REFRESH = _flag("--ring-refresh", 2.0, "seconds between reads of the shard set", kind="float")
RING_SETTLE = _flag("--ring-settle", 6.0, "seconds a new membership must hold before agents are told to resend "
                    "a second time", kind="float")
LOG_LEVEL = _flag("--log-level", "info", "the collector's log level: debug, info, warning or error")

# --- the clients -----------------------------------------------------------------------------
API = _define(PREFIX + "API", f"http://{names.DEFAULT_HTTP}", "the collector's HTTP API base URL", WAIT, PYTEST)
GRAFANA_TOKEN = _define("GRAFANA_TOKEN", None, "Grafana service account token when `--token` is not given",
                        DASHBOARDS)

BY_NAME = {v.name: v for v in VARIABLES}


def disabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the instrumentation is switched off: ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
    names our entry point (or ``*``), as opentelemetry-instrumentation's loader reads it, or
    the deprecated ``A2A_QUIESCENCE_DISABLED`` is true (a warning says to use the other)."""
    listed = OTEL_PYTHON_DISABLED_INSTRUMENTATIONS.get(environ)
    if names.ENTRY_POINT in listed or "*" in listed:
        return True
    if DISABLED.get(environ):
        logger.warning("a2a-quiescence: %s is deprecated; set %s=%s instead", DISABLED.name,
                       OTEL_PYTHON_DISABLED_INSTRUMENTATIONS.name, names.ENTRY_POINT)
        return True
    return False


# --- docs/configuration.md -------------------------------------------------------------------
DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
DOC_HEAD = """# Configuration

Every environment variable a2a-quiescence reads, with its default; generated from
`a2a_quiescence/environment_variables.py` (`python -m a2a_quiescence.environment_variables`;
`--check` fails when this file is stale). Every flag of `a2a-quiescence collector` can be set
with its variable (a flag given wins). *Read by*: `agent` is the instrumentation inside an
agent process, `collector` the sidecar, `wait` `a2a-quiescence wait` and `a2a_quiescence.wait`,
`pytest` the pytest plugin. An unset or empty variable has its default.

Switching the instrumentation off: `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=a2a_quiescence`, the
standard switch (the entry point's name). `A2A_QUIESCENCE_DISABLED=true` is deprecated: it still
works (the instrumentor is loaded and patches nothing) and logs a warning naming the standard one.

| Variable | Default | Read by | Meaning |
|---|---|---|---|
"""


def render_markdown() -> str:
    rows = []
    for v in VARIABLES:
        flag = f" (`{v.flag}`)" if v.flag else ""
        rows.append(f"| `{v.name}`{flag} | {v.default_text()} | {', '.join(v.read_by)} | {v.doc} |")
    return DOC_HEAD + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m a2a_quiescence.environment_variables",
                                     description=f"Write {DOC.name}, the table of every environment variable.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the file is stale")
    args = parser.parse_args(argv)
    if not (DOC.parent.parent / "pyproject.toml").exists():
        parser.error(f"{DOC.parent} is not a checkout's docs folder (run this from a2a-quiescence's source tree)")
    text = render_markdown()
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else None
    if args.check:
        if current != text:
            print(f"stale: docs/{DOC.name} (run python -m a2a_quiescence.environment_variables)", file=sys.stderr)
            return 1
        return 0
    if current != text:
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote docs/{DOC.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
