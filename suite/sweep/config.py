"""One `hummuss-suite sweep` invocation, as every worker of every machine receives it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from suite.registry import Study, get_study
from suite.sweep.samplers import PRUNERS, SAMPLERS


@dataclass(frozen=True)
class SweepConfig:
    """One `hummuss-suite sweep` invocation."""

    study: str
    trials: int  # finished (complete or pruned) trials to reach, over all workers and machines
    scale: str = "cpu"
    variant: str | None = None  # the study's first variant
    name: str | None = None  # the Optuna study name; default <study>[-<variant>]-<scale>
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0  # the sampler's seed and the training seed
    workers: int = 1  # processes on this machine
    storage: str | None = None  # SQLAlchemy URL or journal file; default beside the MLflow store
    timeout_s: float | None = None  # start no trial after this many seconds
    sets: Mapping[str, str] = field(default_factory=dict)  # fixed overrides of every trial (--set)
    heartbeat_s: float = 30.0  # RDB storages: heartbeat interval of a running trial
    grace_s: float = 120.0  # RDB storages: a trial without a heartbeat this long is stale
    stale_after_s: float = 24 * 3600.0  # any storage: a trial running this long is stale
    max_retry: int = 3  # retries of one stale trial
    command: str | None = None  # the command line, for the parent run's description

    def check(self) -> None:
        if self.trials < 1:
            raise ValueError(f"--trials must be >= 1, got {self.trials}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"unknown pruner {self.pruner!r}; known: {', '.join(PRUNERS)}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        if self.stale_after_s <= 0 or self.heartbeat_s <= 0 or self.grace_s <= self.heartbeat_s:
            raise ValueError("need --stale-after > 0 and 0 < heartbeat < grace period")

    def declaration(self) -> Study:
        """The registered study this sweep tunes (ValueError naming the known ones)."""
        return get_study(self.study)

    def default_name(self, study: Study, variant: str) -> str:
        middle = "" if variant == study.variants[0].name else f"-{variant}"
        return f"{study.name}{middle}-{self.scale}"

    def to_json(self) -> str:
        """For a worker process (`SweepConfig.from_json`)."""
        return json.dumps({**dataclasses.asdict(self), "sets": dict(self.sets)})

    @classmethod
    def from_json(cls, text: str) -> SweepConfig:
        return cls(**json.loads(text))
