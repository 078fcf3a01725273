"""The worker's shared state: settings, the models it serves and their batchers, metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ec2_worker.batcher import DynamicBatcher
from ec2_worker.config import WorkerSettings
from ec2_worker.metrics import WorkerMetrics
from inference.cards import ModelCard
from inference.errors import Overloaded
from inference.repository import ModelRepository, validate_name
from inference.runtime import OnnxModel
from inference.v2 import unknown_model


@dataclass
class ServedModel:
    card: ModelCard
    model: OnnxModel | None = None
    batcher: DynamicBatcher | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.batcher is not None


@dataclass
class WorkerState:
    settings: WorkerSettings
    repo: ModelRepository
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    models: dict[str, ServedModel] = field(default_factory=dict)
    draining: bool = False
    started_at: float = field(default_factory=time.time)

    def get(self, name: str) -> ServedModel:
        validate_name(name)
        sm = self.models.get(name)
        if sm is None:
            raise unknown_model(name, self.models)
        return sm

    def batcher(self, name: str) -> DynamicBatcher:
        sm = self.get(name)
        if sm.batcher is None:
            raise Overloaded(f"model {name!r} is still loading", retry_after_s=1)
        return sm.batcher

    @property
    def ready(self) -> bool:
        return not self.draining and bool(self.models) and all(m.ready for m in self.models.values())
