"""The sidecar process (``Collector``): OTLP/HTTP and OTLP/gRPC in (ingest.py,
grpc_receiver.py); /metrics, the settlement API and a status page out (api.py);
optional forwarding upstream (forward.py). This module wires them and runs the
servers on sockets it binds itself."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry, Histogram
from starlette.applications import Starlette

from a2a_quiescence import names
from a2a_quiescence.collector.api import Api
from a2a_quiescence.collector.config import Config, split_hostport
from a2a_quiescence.collector.forward import Forwarder
from a2a_quiescence.collector.ingest import Ingest
from a2a_quiescence.collector.metrics import LATENCY_BUCKETS, StateCollector
from a2a_quiescence.collector.settlement import Cascade, Detector
from a2a_quiescence.collector.state import MeshState
from a2a_quiescence.collector.tier import Tier

logger = logging.getLogger("a2a_quiescence.collector")

__all__ = ["Collector", "Config", "split_hostport"]


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on HOST:PORT (port 0: any free one); OSError if it cannot be had."""
    host, port = split_hostport(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(f"could not listen on {listen}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


class Collector:
    """Our collector: the process ``a2a-quiescence collector`` runs, in whichever role
    its ``Config`` gives it (a pod sidecar beside an agent, the mesh collector, a shard
    of a mesh tier). Not the Prometheus custom collector behind its /metrics
    (metrics.py ``StateCollector``), nor the OpenTelemetry Collector a mesh tier puts
    in front of the shards."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.id = uuid.uuid4().hex
        self.bound: dict[str, tuple[str, int]] = {}
        self.ready = False
        self.detector = Detector(
            stuck_after=config.stuck_after,
            retention=config.retention,
            max_cascades=config.max_cascades,
            on_change=self._on_change,
            on_settle=self._on_settle,
        )
        # a shard of a mesh tier decides the cascades the ring gives it (its Tier tells the
        # detector which at every membership change); a pod sidecar forwarding to the tier
        # only puts the membership's epoch in the id it answers agents with
        shard = bool(config.shards and config.shard_name)
        self.state = MeshState(detector=self.detector, agent_timeout=config.agent_timeout,
                               max_agents=config.max_agents, shard=shard)
        self.tier: Tier | None = None
        if config.shards:
            self.tier = Tier(config, base_id=self.id, ownership=self.detector if shard else None)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StateCollector(self.state, self.detector,
                                              ring=self.tier.ring_seen if self.tier is not None else None))
        self.latency = Histogram(
            names.M_DETECTION_LATENCY,
            "Time from the last hop going passive to the detector declaring the cascade settled",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.forwarder = Forwarder(config, self.state) if config.forward else None
        self.ingest = Ingest(config, self.state, self.tier.collector_id if self.tier is not None else self._own_id,
                             self.forwarder.put if self.forwarder else None)
        self.api = Api(config, self.detector, self.state, self.registry, self.authorized, self._listening,
                       tier=self.tier if shard else None)
        self._stop = asyncio.Event()

    # -- settlement notifications ------------------------------------------------
    def _on_change(self, cascade: Cascade) -> None:
        self.api.changed(cascade)

    def _on_settle(self, cascade: Cascade) -> None:
        # observed once per cascade (a later root wave settling again is not a new detection)
        if cascade.detection_latency is not None and not cascade.latency_observed:
            self.latency.observe(cascade.detection_latency)
            cascade.latency_observed = True

    # -- the parts, as the receivers, the CLI and the tests use them ---------------
    def _own_id(self) -> str:
        return self.id

    def authorized(self, header: str | None) -> bool:
        return self.ingest.authorized(header)

    def describe(self, trace_id: str) -> dict[str, Any]:
        return self.api.describe(trace_id)

    def mesh(self) -> dict[str, Any]:
        return self.api.mesh()

    def _listening(self) -> dict[str, str] | None:
        return {k: f"{h}:{p}" for k, (h, p) in self.bound.items()} if self.ready else None

    def otlp_app(self) -> Callable[..., Awaitable[None]]:
        return self.ingest.app()

    def api_app(self) -> Starlette:
        routes = self.api.routes()
        if self.config.otlp_listen and self.config.otlp_listen == self.config.http_listen:
            routes.append(self.ingest.route())
        return Starlette(routes=routes)

    # -- running -------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.detector.expire()
            self.state.refresh()

    async def serve(self) -> None:
        """Run until ``stop()`` (or SIGTERM/SIGINT via the CLI). The sockets are bound
        here, before any server starts: a port that cannot be had is an OSError at
        once, and what is bound is known without asking the servers."""
        import uvicorn

        listens = [("http", self.config.http_listen, self.api_app())]
        if self.config.otlp_listen and self.config.otlp_listen != self.config.http_listen:
            listens.append(("otlp_http", self.config.otlp_listen, self.otlp_app()))
        sockets = []
        try:
            for name, listen, _app in listens:
                sock = bind(listen)
                sockets.append(sock)
                self.bound[name] = sock.getsockname()[:2]
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        if "otlp_http" not in self.bound and self.config.otlp_listen:
            self.bound["otlp_http"] = self.bound["http"]
        servers = []
        for (_name, _listen, app), sock in zip(listens, sockets):
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                                   interface="asgi3"))
            server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            servers.append((server, sock))
        grpc_server = None
        serving = [asyncio.create_task(s.serve(sockets=[sock]), name=f"uvicorn:{i}") for i, (s, sock) in enumerate(servers)]
        helpers = [asyncio.create_task(self._housekeeping(), name="housekeeping")]
        if self.forwarder is not None:
            helpers.append(asyncio.create_task(self.forwarder.run(), name="forwarder"))
        if self.tier is not None:
            helpers.append(asyncio.create_task(self.tier.run(), name="tier"))
        stopping = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            if self.config.grpc_listen:
                from a2a_quiescence.collector.grpc_receiver import Receiving, start_grpc

                receiving = Receiving(
                    authorized=self.authorized,
                    reject=self.state.reject,
                    ingest=self.ingest.apply,
                    forward=self.forwarder.put if self.forwarder else None,
                    max_body_bytes=self.config.max_body_bytes,
                )
                grpc_server, port = await start_grpc(receiving, self.config.grpc_listen)
                self.bound["otlp_grpc"] = (split_hostport(self.config.grpc_listen)[0], port)
            self.ready = True  # connections wait in the sockets' backlog until the servers accept them
            logger.info("a2a-quiescence collector listening: %s", self.bound)
            done, _ = await asyncio.wait([stopping, *serving], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping and task.exception() is not None:
                    raise OSError(f"a server stopped: {task.exception()!r}")
        finally:
            self.ready = False
            stopping.cancel()
            for server, _sock in servers:
                server.should_exit = True
            if grpc_server is not None:
                await grpc_server.stop(grace=1.0)
            await asyncio.gather(*serving, return_exceptions=True)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, stopping, return_exceptions=True)
            for sock in sockets:
                sock.close()

    def stop(self) -> None:
        self._stop.set()
