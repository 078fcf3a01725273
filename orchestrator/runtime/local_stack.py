"""The whole local data path in one process tree: front door + local cloud (+ local Lambda).

``LocalStack`` owns every process it starts and stops them all on exit, on Ctrl-C and on errors
(``async with LocalStack(...)``). ``mark run`` and the end-to-end tests use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import uvicorn

from inference.repository import ModelRepository
from orchestrator.cloud import registry
from orchestrator.cloud.base import FunctionBackend, Instance
from orchestrator.cloud.local.instances import InstanceTypeSpec, LocalCloud, LocalCloudConfig
from orchestrator.cloud.registry import BackendUnavailable
from orchestrator.config import DeploymentConfig
from orchestrator.config import LocalBackend as LocalBackendConfig
from orchestrator.economics.catalog import Catalog, load_catalog
from orchestrator.frontdoor.app import FrontDoor
from orchestrator.frontdoor.arrivals import ArrivalRecorder
from orchestrator.frontdoor.auth import ApiKeys
from orchestrator.frontdoor.dispatcher import Dispatcher, FrontDoorConfig
from orchestrator.types import InstanceState, Market
from predictor.history import HistoryWriter, writer_id_for


@dataclass(frozen=True)
class StackConfig:
    models: tuple[str, ...]
    repository: str
    host: str = "127.0.0.1"
    port: int = 8080
    instance_type: str = "c5.large"
    initial_instances: int = 1
    market: Market = Market.ON_DEMAND
    time_factor: float = 1.0
    rt_max_ms: float = 200.0
    threads: int = 2
    max_batch: int = 8
    batch_timeout_ms: float = 5.0
    # Each worker's queue bound (its max_queue), which the front door also counts as "full": one
    # number, so the front door answers 503 only where the workers would.
    queue_bound: int = 256
    types: tuple[InstanceTypeSpec, ...] = field(default_factory=tuple)
    max_instances: int | None = None  # None: what this machine can hold
    # Per-second arrivals go to this folder (predictor.history; `mark forecast train --from-history`);
    # None: not recorded.
    history_dir: str | None = None


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for the front door. Created with ``IPPROTO_TCP`` explicitly: asyncio sets
    TCP_NODELAY only on connections whose socket says so, and without it every small answer waits for
    the client's delayed ACK (~40 ms more per request, measured)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def stack_config(deployment: DeploymentConfig, catalog: Catalog, repository: str) -> StackConfig:
    """The local stack a deployment config describes (its backend must be ``local``).

    Raises:
        BackendUnavailable: the config names another backend.
        UnknownInstanceTypeError: an allowed type is not in the catalog.
    """
    local = registry.backend(deployment.backend.name)
    if not isinstance(deployment.backend, LocalBackendConfig):
        raise BackendUnavailable(
            f"backend.name {deployment.backend.name!r}: this command runs the local stack; use backend.name: local"
        )
    types = local.instance_types(deployment, catalog)
    return StackConfig(
        models=tuple(deployment.models),
        repository=repository,
        host=deployment.frontdoor.host,
        port=deployment.frontdoor.port,
        instance_type=deployment.fleet.initial,
        initial_instances=deployment.fleet.initial_instances,
        market=deployment.fleet.initial_market,
        time_factor=deployment.backend.time_factor,
        rt_max_ms=deployment.slo.rt_max_ms,
        threads=types[0].threads,
        max_batch=deployment.batching.max_batch_size,
        batch_timeout_ms=deployment.batching.batch_timeout_ms,
        queue_bound=deployment.batching.max_queue,
        types=types,
        max_instances=deployment.fleet.max_instances,
        history_dir=str(deployment.history_path()) if deployment.controller.record_arrivals else None,
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the caller owns signals
        yield


def catalog_prices(catalog: Catalog, type_names: list[str]) -> Callable[[Instance], float]:
    """Each instance's price per hour from the catalog (on-demand, or the typical spot price), so the
    dispatcher's "lowest marginal cost" compares real prices.

    Raises:
        UnknownInstanceTypeError: a type is not in the catalog (checked now, not at the first request).
    """
    for name in type_names:
        catalog.instance(name)
    return lambda inst: catalog.price_usd_per_hour(inst.instance_type, inst.market.value)


class LocalStack:
    def __init__(
        self,
        config: StackConfig,
        function: FunctionBackend | None = None,
        *,
        catalog: Catalog | None = None,
        api_keys: ApiKeys | None = None,
    ) -> None:
        self.config = config
        types = config.types or (InstanceTypeSpec(config.instance_type, config.threads, 0.0),)
        prices = catalog_prices(catalog or load_catalog(), [t.name for t in types])
        self.cloud = LocalCloud(
            LocalCloudConfig(
                models=config.models,
                repository=config.repository,
                types=types,
                time_factor=config.time_factor,
                max_batch_size=config.max_batch,
                batch_timeout_ms=config.batch_timeout_ms,
                rt_max_ms=config.rt_max_ms,
                max_queue=config.queue_bound,
                max_instances=config.max_instances,
            )
        )
        self.function = function
        self.dispatcher = Dispatcher(
            self.cloud,
            FrontDoorConfig(
                rt_max_ms=config.rt_max_ms,
                max_batch=config.max_batch,
                batch_timeout_ms=config.batch_timeout_ms,
                threads=config.threads,
                queue_bound=config.queue_bound,
            ),
            function,
            prices,
            models=config.models,
        )
        self.frontdoor = FrontDoor(
            self.dispatcher, ModelRepository(config.repository), list(config.models), api_keys=api_keys
        )
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.port = config.port

    async def __aenter__(self) -> LocalStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        c = self.config
        try:  # bind first: a taken port is an error now, before any process starts
            sock = _listening_socket(c.host, c.port)
        except OSError as e:
            raise OSError(
                e.errno,
                f"the front door could not listen on {c.host}:{c.port} ({e.strerror}): choose another with --port "
                "or frontdoor.port (0 = any free port)",
            ) from None
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        self._start_recording()
        if self.function is not None:
            await self.function.start()
        if c.initial_instances:
            await self.cloud.launch(c.instance_type, c.market, c.initial_instances)
        self._server = _Server(
            uvicorn.Config(
                self.frontdoor,  # type: ignore[arg-type]
                host=c.host,
                port=c.port,
                http="httptools",
                loop="none",
                lifespan="off",
                access_log=False,
                log_level="warning",
                proxy_headers=False,
                timeout_keep_alive=75,
                timeout_graceful_shutdown=5,  # then close keep-alive clients that linger
                server_header=False,
            )
        )
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError(f"the front door stopped while starting on {c.host}:{c.port}")
            await asyncio.sleep(0.01)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])

    def _start_recording(self) -> None:
        """Record arrivals when ``history_dir`` is set; a folder that cannot be created is reported and
        serving goes on without recording (the forecaster then keeps its current model)."""
        c = self.config
        if c.history_dir is None:
            return
        try:
            writer = HistoryWriter(c.history_dir, writer_id_for(f"frontdoor-{c.host}-{self.port}"))
        except OSError as e:
            print(f"[run] WARNING: not recording arrivals: {e}", file=sys.stderr)
            return
        recorder = ArrivalRecorder(writer)
        recorder.start()
        self.frontdoor.arrivals = recorder

    async def wait_running(self, count: int = 1, timeout_s: float = 60.0) -> list[Instance]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            running = [i for i in self.cloud.instances() if i.state == InstanceState.RUNNING]
            if len(running) >= count:
                return running
            if loop.time() > deadline:
                raise TimeoutError(f"{len(running)}/{count} instances running after {timeout_s:.0f} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.frontdoor.arrivals is not None:  # after the server: every accepted request is counted
            await self.frontdoor.arrivals.close()
            self.frontdoor.arrivals = None
        if self.function is not None:
            await self.function.stop()
        await self.cloud.close()
        if self._socket is not None:
            self._socket.close()
