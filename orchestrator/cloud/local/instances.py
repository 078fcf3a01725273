"""The embedded local cloud: an instance is a real ``ec2_worker`` process on a loopback port.

No account, no Docker. An instance launched now starts its worker process at once (so the model
load overlaps the boot, as on EC2 with a baked AMI) but only turns ``running`` when both the
type's boot time × the run's time factor has passed and the worker answers ready. The number of
processes is capped by what this machine can hold; past the cap ``launch`` raises a clear
``CapacityError`` rather than slowing every instance down. Spot interruptions can be injected:
notice first, termination (graceful drain) after the notice period.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator.clock import ScaledClock
from orchestrator.cloud.base import (
    CapacityError,
    Cloud,
    Instance,
    InstanceNotFound,
    InterruptionNotice,
)
from orchestrator.types import InstanceState, Market

ROOT = Path(__file__).resolve().parents[3]
# Resident memory of an idle worker after loading its model, read from /proc/PID/status (VmRSS):
# 128 MB with mobilenet_v2, 160 MB with efficientnet_lite2; 350 MB leaves room for batch buffers.
WORKER_RSS_BYTES = 350 * 1024 * 1024
SPOT_NOTICE_S = 120.0  # EC2 gives two minutes


@dataclass(frozen=True)
class InstanceTypeSpec:
    """What the local backend needs of a type: boot time, and the onnxruntime threads its worker gets."""

    name: str
    threads: int
    boot_seconds: float


def local_threads(vcpu: int, cap: int | None = None) -> int:
    """onnxruntime threads for a type emulated here: its physical cores (EC2 vCPUs are hyperthreads,
    two per core), at most this machine's cores and ``cap``. More threads than physical cores only
    makes inference threads fight over the same core."""
    n = max(1, min(vcpu // 2, os.cpu_count() or 1))
    return max(1, min(n, cap)) if cap else n


@dataclass(frozen=True)
class LocalCloudConfig:
    models: tuple[str, ...]
    repository: str
    types: tuple[InstanceTypeSpec, ...]
    time_factor: float = 1.0
    max_instances: int | None = None  # fleet.max_instances; at most what this machine's memory and cores hold
    max_batch_size: int = 8
    batch_timeout_ms: float = 5.0
    rt_max_ms: float = 200.0
    max_queue: int = 256

    def type_spec(self, name: str) -> InstanceTypeSpec:
        for t in self.types:
            if t.name == name:
                return t
        raise ValueError(f"unknown instance type {name!r}; the local cloud knows {[t.name for t in self.types]}")


def machine_instance_cap() -> int:
    """How many worker processes this machine can hold: memory for each, at most 4 per core."""
    try:
        pages, page_size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        by_memory = int(pages * page_size * 0.5 // WORKER_RSS_BYTES)
    except (ValueError, OSError):
        by_memory = 8
    return max(1, min(by_memory, 4 * (os.cpu_count() or 1)))


@dataclass
class _Local:
    instance: Instance
    proc: subprocess.Popen[bytes]
    ready_file: Path
    boot_deadline: float
    log_path: Path
    admin_port: int | None = None
    worker_ready: bool = False
    stop_task: asyncio.Task[None] | None = field(default=None, repr=False)


class LocalCloud(Cloud):
    def __init__(self, config: LocalCloudConfig, clock: ScaledClock | None = None) -> None:
        self.config = config
        self.clock = clock or ScaledClock(config.time_factor)
        # the deployment's bound, and never more than this machine can hold
        self.cap = min(config.max_instances or machine_instance_cap(), machine_instance_cap())
        self._instances: dict[str, _Local] = {}
        self._ids = itertools.count(1)
        self._notices: dict[str, InterruptionNotice] = {}
        self._workdir = Path(tempfile.mkdtemp(prefix="mark-local-cloud-"))
        self._watch: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self.clock.now()

    # ---- lifecycle -------------------------------------------------------------------------
    def _alive(self) -> list[_Local]:
        return [x for x in self._instances.values() if x.instance.state != InstanceState.TERMINATED]

    async def launch(self, instance_type: str, market: Market, count: int = 1) -> list[Instance]:
        spec = self.config.type_spec(instance_type)
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if len(self._alive()) + count > self.cap:
            raise CapacityError(
                f"the local cloud holds at most {self.cap} instances (fleet.max_instances, and what this machine "
                f"can hold: {machine_instance_cap()}); {len(self._alive())} alive, {count} more asked"
            )
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_loop(), name="local-cloud-watch")
        out = []
        for _ in range(count):
            iid = f"i-local{next(self._ids):05d}"
            now = self.now()
            ready_file = self._workdir / f"{iid}.json"
            log_path = self._workdir / f"{iid}.log"
            settings = {
                "models": list(self.config.models),
                "repository": self.config.repository,
                "port": 0,
                "admin_port": 0,
                "threads": spec.threads,
                # Emulated instances share this machine's cores: a spinning idle thread would steal
                # them from the other instances and the Lambda environments.
                "spin": False,
                "max_batch_size": self.config.max_batch_size,
                "batch_timeout_ms": self.config.batch_timeout_ms,
                "rt_max_ms": self.config.rt_max_ms,
                "max_queue": self.config.max_queue,
                "ready_file": str(ready_file),
            }
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "ec2_worker", "--json", json.dumps(settings)],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop workers in order
                )
            inst = Instance(iid, instance_type, market, InstanceState.PENDING, launched_at=now)
            self._instances[iid] = _Local(inst, proc, ready_file, now + spec.boot_seconds, log_path)
            out.append(inst)
        return out

    async def terminate(self, instance_ids: list[str]) -> None:
        """Graceful: the worker drains what it accepted (SIGTERM), then the instance is gone."""
        waits = []
        for iid in instance_ids:
            x = self._instances.get(iid)
            if x is None:
                raise InstanceNotFound(f"unknown instance {iid!r}")
            if x.instance.state == InstanceState.TERMINATED:
                continue
            x.instance = replace(x.instance, state=InstanceState.DRAINING)
            waits.append(self._stop(x))
        await asyncio.gather(*waits)

    async def _stop(self, x: _Local) -> None:
        if x.proc.poll() is None:
            x.proc.send_signal(signal.SIGTERM)
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(loop.run_in_executor(None, x.proc.wait), timeout=30)
            except TimeoutError:
                x.proc.kill()
                await loop.run_in_executor(None, x.proc.wait)
        x.instance = replace(x.instance, state=InstanceState.TERMINATED, terminated_at=self.now(), endpoint=None)
        self._notices.pop(x.instance.id, None)

    def instances(self) -> list[Instance]:
        return [x.instance for x in self._instances.values()]

    def interruption_notices(self) -> list[InterruptionNotice]:
        return list(self._notices.values())

    def inject_interruption(self, instance_id: str, notice_seconds: float = SPOT_NOTICE_S) -> InterruptionNotice:
        """Emulate EC2 reclaiming a spot instance: a notice now, termination after ``notice_seconds``."""
        x = self._instances.get(instance_id)
        if x is None or x.instance.state == InstanceState.TERMINATED:
            raise InstanceNotFound(f"no live instance {instance_id!r}")
        if x.instance.market != Market.SPOT:
            raise ValueError(f"{instance_id} is on-demand: only spot instances get interruption notices")
        now = self.now()
        notice = InterruptionNotice(instance_id, now, now + notice_seconds)
        self._notices[instance_id] = notice
        x.instance = replace(x.instance, interruption_at=notice.terminate_at)
        return notice

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            try:
                await self._watch
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*(self._stop(x) for x in self._alive()), return_exceptions=True)
        shutil.rmtree(self._workdir, ignore_errors=True)  # worker logs and ready files of this run

    def process_id(self, instance_id: str) -> int:
        """The worker's PID (for fault injection in tests and for operators)."""
        return self._instances[instance_id].proc.pid

    def kill(self, instance_id: str) -> None:
        """Fault injection: the worker process dies at once (SIGKILL), as on a hardware failure."""
        x = self._instances[instance_id]
        if x.proc.poll() is None:
            x.proc.kill()

    # ---- readiness -------------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        """Promote booted instances to running, reclaim interrupted ones, notice dead processes."""
        while True:
            now = self.now()
            for x in list(self._instances.values()):
                st = x.instance.state
                if st == InstanceState.TERMINATED:
                    continue
                if x.proc.poll() is not None and x.stop_task is None:
                    x.instance = replace(x.instance, state=InstanceState.TERMINATED, terminated_at=now, endpoint=None)
                    self._notices.pop(x.instance.id, None)
                    continue
                notice = self._notices.get(x.instance.id)
                if notice and now >= notice.terminate_at and x.stop_task is None:
                    x.instance = replace(x.instance, state=InstanceState.DRAINING)
                    x.stop_task = asyncio.get_running_loop().create_task(self._stop(x))
                    continue
                if st == InstanceState.PENDING and now >= x.boot_deadline and await self._worker_ready(x):
                    x.instance = replace(x.instance, state=InstanceState.RUNNING, ready_at=now)
            await asyncio.sleep(0.05)

    async def _worker_ready(self, x: _Local) -> bool:
        if x.instance.endpoint is None:
            if not x.ready_file.exists():
                return False
            info = json.loads(x.ready_file.read_text())
            x.instance = replace(x.instance, endpoint=f"127.0.0.1:{info['port']}")
            x.admin_port = info["admin_port"]
        host, port = x.instance.endpoint.rsplit(":", 1) if x.instance.endpoint else ("", "0")
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            return False
        try:
            writer.write(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status = await reader.readline()
            return b" 200 " in status
        finally:
            writer.close()

    def admin_url(self, instance_id: str) -> str | None:
        x = self._instances[instance_id]
        return f"http://127.0.0.1:{x.admin_port}" if x.admin_port else None

    def log_path(self, instance_id: str) -> Path:
        return self._instances[instance_id].log_path
