"""One Lambda execution environment as a process on this machine: ``python -m lambda_fn.local_env``
started with the function's environment variables, its log, and how it ends.

The pool (``lambda_pool.py``) decides when environments start, serve and stop; this module only knows
how to start one, kill one, wait for its exit code and read the tail of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository: the child imports lambda_fn from here


@dataclass(eq=False)
class Environment:
    """A ready environment in the pool: its process, the INIT it reported (ms), whether an invocation
    holds it, and when it was last used (``time.monotonic()`` seconds)."""

    proc: asyncio.subprocess.Process
    init_ms: float
    busy: bool = True
    last_used: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid


def function_environment(
    *,
    repository: str,
    models: Sequence[str],
    threads: int,
    max_batch_size: int,
    function_name: str,
    memory_mb: int,
) -> dict[str, str]:
    """The child's environment variables: ours, less the ones that would point the handler elsewhere,
    plus the function's configuration and the variables the Lambda runtime sets."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_URI", "AWS_LAMBDA_RUNTIME_API")}
    env |= {
        "MARK_MODEL_REPO": str(Path(repository).resolve()),
        "MARK_MODELS": ",".join(models),
        "MARK_ORT_THREADS": str(threads),
        "MARK_MAX_BATCH_SIZE": str(max_batch_size),
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "POWERTOOLS_SERVICE_NAME": function_name,
        "PYTHONUNBUFFERED": "1",
    }
    return env


async def spawn(env: Mapping[str, str], log_path: Path) -> asyncio.subprocess.Process:
    """Start one environment (INIT begins now); its stderr is appended to ``log_path``.

    The child gets its own session, so Ctrl-C reaches only us and we stop the environments in order.
    """
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lambda_fn.local_env",
            "--spawned-at",
            repr(time.time()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=dict(env),
            cwd=ROOT,
            start_new_session=True,
        )


def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL ``proc`` unless it already exited."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def exit_code(proc: asyncio.subprocess.Process, wait_s: float = 2.0) -> int | None:
    """``proc``'s exit code, waiting up to ``wait_s`` seconds for it (None if it is still running)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), wait_s)
    return proc.returncode


def log_tail(path: Path, limit: int = 600) -> str:
    """The last ``limit`` characters of an environment's log, stripped ('' if it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:].strip()
