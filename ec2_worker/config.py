"""Worker settings, validated so that a bad value fails at start with a message naming the field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inference.repository import validate_name


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(min_length=1, description="model names from the repository to serve")
    repository: str | None = Field(default=None, description="model repository folder (default: see mark zoo)")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    admin_host: str = Field(default="127.0.0.1", description="internal endpoint; never the public interface")
    admin_port: int = Field(default=0, ge=0, le=65535, description="0 = pick a free port and report it")
    threads: int = Field(default=2, ge=1, le=256, description="onnxruntime intra-op threads per session")
    spin: bool = Field(
        default=True,
        description="let idle onnxruntime threads spin (lower latency on a dedicated instance; off where "
        "processes share cores, as in the local cloud)",
    )
    slots: int = Field(default=1, ge=1, le=64, description="batches executed concurrently (one session each)")
    max_batch_size: int = Field(default=8, ge=1, le=4096)
    batch_timeout_ms: float = Field(default=5.0, ge=0, le=60_000)
    max_queue: int = Field(default=256, ge=1, le=1_000_000)
    rt_max_ms: float = Field(default=200.0, gt=0, le=3_600_000, description="default deadline per request")
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="larger bodies get 413")
    ready_file: str | None = Field(default=None, description="write the bound ports here as JSON once ready")

    @field_validator("models")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            validate_name(name)
        if len(set(v)) != len(v):
            raise ValueError("a model is listed twice")
        return v
