"""Run the worker: public and internal apps on one event loop, graceful drain on SIGTERM/SIGINT.

On a signal the worker stops admitting (readiness 503, new requests 503 + Retry-After), finishes
every request it accepted, then closes both listeners: a spot notice or a scale-in never drops work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from ec2_worker.app import create_admin_app, create_public_app, load_models
from ec2_worker.app_state import ServedModel, WorkerState
from ec2_worker.config import WorkerSettings
from inference.repository import ModelRepository


class _Server(uvicorn.Server):
    """uvicorn server that leaves signal handling to us (two servers share one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _uvicorn_config(app: object, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        http="httptools",
        loop="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
        timeout_keep_alive=75,  # longer than the front door keeps idle pooled connections
        proxy_headers=False,  # never trust X-Forwarded-* from whoever can reach the port
        server_header=False,
    )


def _bound_port(server: uvicorn.Server) -> int:
    return int(server.servers[0].sockets[0].getsockname()[1])


def build_state(settings: WorkerSettings) -> WorkerState:
    """Resolve every model's card up front: an unknown model fails the start, not the first request."""
    repo = ModelRepository(settings.repository)
    state = WorkerState(settings=settings, repo=repo)
    for name in settings.models:
        state.models[name] = ServedModel(card=repo.card(name))
    return state


async def serve(settings: WorkerSettings, *, announce: bool = True) -> None:
    state = build_state(settings)
    loop = asyncio.get_running_loop()
    public = _Server(_uvicorn_config(create_public_app(state), settings.host, settings.port))
    admin = _Server(_uvicorn_config(create_admin_app(state), settings.admin_host, settings.admin_port))
    stopping = asyncio.Event()

    def _on_signal() -> None:
        if stopping.is_set():  # second Ctrl-C: stop now
            public.force_exit = admin.force_exit = True
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal)

    load_models(state, loop)
    tasks = [loop.create_task(public.serve()), loop.create_task(admin.serve())]
    while not (public.started and admin.started):
        if any(t.done() for t in tasks):  # e.g. port in use: surface the error
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()  # type: ignore[misc]
            raise SystemExit(f"worker could not bind {settings.host}:{settings.port} / admin port")
        await asyncio.sleep(0.01)
    port, admin_port = _bound_port(public), _bound_port(admin)
    info = {"pid": os.getpid(), "host": settings.host, "port": port, "admin_port": admin_port}
    if settings.ready_file:
        tmp = Path(settings.ready_file + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, settings.ready_file)
    if announce:
        print(json.dumps({"event": "listening", **info, "models": settings.models}), flush=True)

    await stopping.wait()
    state.draining = True
    await asyncio.gather(*(sm.batcher.close() for sm in state.models.values() if sm.batcher))
    public.should_exit = admin.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)


def run(settings: WorkerSettings) -> None:
    try:
        import uvloop

        uvloop.run(serve(settings))
    except ImportError:  # pragma: no cover - uvloop is a dependency via uvicorn[standard]
        asyncio.run(serve(settings))


def main(argv: list[str] | None = None) -> None:
    """``python -m ec2_worker --json '{...settings...}'``: how the local cloud starts an instance."""
    import argparse

    from pydantic import ValidationError

    p = argparse.ArgumentParser(prog="python -m ec2_worker")
    p.add_argument("--json", required=True, help="WorkerSettings as JSON")
    args = p.parse_args(argv)
    try:
        settings = WorkerSettings.model_validate_json(args.json)
    except ValidationError as e:
        sys.exit(f"invalid worker settings: {e}")
    run(settings)
