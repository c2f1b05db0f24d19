"""`a2a-quiescence collector`: run the sidecar."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from pathlib import Path

from a2a_quiescence import environment_variables as env
from a2a_quiescence.collector.config import Config, split_hostport

EXTRA_MISSING = (
    "a2a-quiescence collector: the sidecar's dependencies are not installed ({missing}); "
    "install them with: pip install 'a2a-quiescence[collector]'"
)

def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collector",
        help="run the sidecar collector",
        description=(
            "Run the a2a-quiescence sidecar: receive agents' telemetry over OTLP (HTTP and gRPC), "
            "keep per-agent state (also after an agent exits), export it on /metrics, and answer "
            "whether cascades have settled (GET /v1/cascades/{trace_id}[/wait], GET /v1/mesh). "
            f"Every flag can also be set with an environment variable {env.PREFIX}<FLAG> "
            f"(upper case, dashes as underscores), e.g. {env.HTTP_LISTEN.name} (docs/configuration.md)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--otlp-listen", default=env.OTLP_LISTEN.cli_default(),
                   help="HOST:PORT for OTLP/HTTP (/v1/traces, /v1/metrics, /v1/logs); 'off' disables")
    p.add_argument("--otlp-grpc-listen", default=env.OTLP_GRPC_LISTEN.cli_default(),
                   help="HOST:PORT for OTLP/gRPC; 'off' disables")
    p.add_argument("--http-listen", default=env.HTTP_LISTEN.cli_default(),
                   help="HOST:PORT for /metrics, /healthz, /readyz, the settlement API and the status page")
    p.add_argument("--allow-remote", action="store_true", default=env.ALLOW_REMOTE.get(),
                   help="permit listening on non-loopback addresses (off: loopback only)")
    p.add_argument("--token", default=env.TOKEN.cli_default(),
                   help=f"bearer token required on OTLP ingest and the /v1 API (env {env.TOKEN.name})")
    p.add_argument("--token-file", default=env.TOKEN_FILE.cli_default(), help="read the bearer token from this file")
    p.add_argument("--max-body-bytes", type=int, default=env.MAX_BODY_BYTES.cli_default(),
                   help="largest accepted request body, before and after decompression (413 above)")
    p.add_argument("--max-agents", type=int, default=env.MAX_AGENTS.cli_default(),
                   help="agents tracked at most (oldest evicted, counted)")
    p.add_argument("--max-cascades", type=int, default=env.MAX_CASCADES.cli_default(),
                   help="cascades tracked at most (oldest evicted, counted)")
    p.add_argument("--stuck-after", type=float, default=env.STUCK_AFTER.cli_default(),
                   help="seconds without progress after which an open cascade is reported stuck")
    p.add_argument("--root-grace", type=float, default=env.ROOT_GRACE.cli_default(),
                   help="default of /v1/mesh/wait's grace: seconds after a window ends during which root requests "
                        "received in it may still be reported (agents report within milliseconds)")
    p.add_argument("--retention", type=float, default=env.RETENTION.cli_default(),
                   help="seconds a settled cascade stays queryable in detail")
    p.add_argument("--agent-timeout", type=float, default=env.AGENT_TIMEOUT.cli_default(),
                   help="seconds of silence after which an agent process counts as gone (its in-flight producers as leaked)")
    p.add_argument("--forward", default=env.FORWARD.cli_default(),
                   help="base URL of an upstream OTLP/HTTP endpoint to forward everything to (Tempo, Jaeger, an OTel Collector)")
    p.add_argument("--forward-token", default=env.FORWARD_TOKEN.cli_default(),
                   help="bearer token sent upstream when forwarding (e.g. to a token-protected mesh collector)")
    p.add_argument("--forward-queue", type=int, default=env.FORWARD_QUEUE.cli_default(),
                   help="requests held for forwarding at most (beyond: dropped, counted)")
    p.add_argument("--forward-concurrency", type=int, default=env.FORWARD_CONCURRENCY.cli_default(),
                   help="requests forwarded at a time (waiting ones of one signal travel together)")
    p.add_argument("--shards", default=env.SHARDS.cli_default(),
                   help="the mesh tier's shard set, in the load-balancing exporter's order: comma-separated API URLs "
                        "(http://mesh-0.mesh:9464; ring endpoint HOST:RING_PORT), ENDPOINT=URL items, "
                        "dns+http://NAME:PORT, or @FILE (read again every --ring-refresh). With --shard-name this "
                        "collector is a shard; without, a pod sidecar forwarding to the tier that tells its agents "
                        "to resend what they hold when the membership changes")
    p.add_argument("--shard-name", default=env.SHARD_NAME.cli_default(),
                   help="this shard's ring endpoint exactly as the exporter names it (e.g. mesh-0.mesh.ns:4317)")
    p.add_argument("--ring-port", type=int, default=env.RING_PORT.cli_default(),
                   help="the shards' OTLP/gRPC port: the ring endpoint of a shard given by URL is HOST:RING_PORT")
    p.add_argument("--ring-refresh", type=float, default=env.RING_REFRESH.cli_default(),
                   help="seconds between reads of the shard set")
    p.add_argument("--ring-settle", type=float, default=env.RING_SETTLE.cli_default(),
                   help="seconds a new membership must hold before a pod sidecar tells its agents to resend "
                        "a second time (the first is at once): longer than the exporter takes to see it "
                        "(its dns/k8s resolver: 5 s). Shards publish it so clients know how long resends take")
    p.add_argument("--log-level", default=env.LOG_LEVEL.cli_default(), choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def _check_listen(value: str | None, allow_remote: bool, flag: str) -> str | None:
    if value is None or value.lower() == "off":
        return None
    host, _port = split_hostport(value)
    if not allow_remote:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"{flag} {value}: not a loopback address; pass --allow-remote to listen there")
    return value


def config_from_args(args: argparse.Namespace) -> Config:
    token = args.token
    if args.token_file:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"--token-file {args.token_file} is empty")
    if not 0 <= args.root_grace <= 60:
        raise ValueError(f"--root-grace must be 0..60 seconds, got {args.root_grace}")
    positive = ("max_body_bytes", "max_agents", "max_cascades", "stuck_after", "retention", "agent_timeout",
                "forward_queue", "forward_concurrency")
    for flag in positive:
        if getattr(args, flag) <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be greater than 0, got {getattr(args, flag)}")
    if args.shard_name and not args.shards:
        raise ValueError("--shard-name needs --shards")
    if args.ring_refresh <= 0 or args.ring_settle < 0:
        raise ValueError("--ring-refresh must be > 0 and --ring-settle >= 0")
    if args.shards:
        from a2a_quiescence.shards import ShardSpec

        spec = ShardSpec(args.shards, args.ring_port)  # syntax now; names are resolved while running
        if args.shard_name and not spec.dynamic:
            membership = spec.resolve()
            if args.shard_name not in membership.endpoints():
                raise ValueError(f"--shard-name {args.shard_name} is not in --shards ({', '.join(membership.endpoints())})")
    http_listen = _check_listen(args.http_listen, args.allow_remote, "--http-listen")
    if http_listen is None:
        raise ValueError("--http-listen cannot be off")
    return Config(
        otlp_listen=_check_listen(args.otlp_listen, args.allow_remote, "--otlp-listen"),
        grpc_listen=_check_listen(args.otlp_grpc_listen, args.allow_remote, "--otlp-grpc-listen"),
        http_listen=http_listen,
        token=token or None,
        max_body_bytes=args.max_body_bytes,
        max_agents=args.max_agents,
        max_cascades=args.max_cascades,
        stuck_after=args.stuck_after,
        root_grace=args.root_grace,
        retention=args.retention,
        agent_timeout=args.agent_timeout,
        forward=args.forward,
        forward_token=args.forward_token or None,
        forward_queue=args.forward_queue,
        forward_concurrency=args.forward_concurrency,
        shards=args.shards or None,
        shard_name=args.shard_name or None,
        ring_port=args.ring_port,
        ring_refresh=args.ring_refresh,
        ring_settle=args.ring_settle,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"a2a-quiescence collector: {exc}", file=sys.stderr)
        return 2

    try:
        from a2a_quiescence.collector.server import Collector
    except ImportError as exc:  # the agent-side install has no server dependencies
        print(EXTRA_MISSING.format(missing=exc.name or exc), file=sys.stderr)
        return 2

    async def main() -> int:
        collector = Collector(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, collector.stop)
        try:
            await collector.serve()
        except OSError as exc:
            print(f"a2a-quiescence collector: {exc}", file=sys.stderr)
            return 2
        return 0

    try:
        import uvloop  # the `collector` extra: a faster event loop when installed
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())
