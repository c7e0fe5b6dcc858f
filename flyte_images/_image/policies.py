"""Task policies of the Flyte SDK data model (cache, retries, timeouts, reuse, pod templates,
triggers), with its names, parameters and validation; nothing here runs tasks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

CacheBehavior = Literal["auto", "override", "disable"]


@dataclass(frozen=True)
class Cache:
    """Cache configuration for a task. Example: Cache("auto", salt="v2")"""

    behavior: CacheBehavior
    version_override: str | None = None
    serialize: bool = False
    ignored_inputs: tuple[str, ...] | str = field(default_factory=tuple)
    salt: str = ""
    policies: Any = None
    max_age: timedelta | int | None = None

    def __post_init__(self) -> None:
        if self.behavior not in ("auto", "override", "disable"):
            raise ValueError(f"Cache behavior must be 'auto', 'override' or 'disable', got {self.behavior!r}")
        if isinstance(self.ignored_inputs, str):
            object.__setattr__(self, "ignored_inputs", (self.ignored_inputs,))
        if isinstance(self.max_age, int) and not isinstance(self.max_age, bool):
            if self.max_age < 0:
                raise ValueError("max_age must be non-negative")
            object.__setattr__(self, "max_age", timedelta(seconds=self.max_age))

    def is_enabled(self) -> bool:
        return self.behavior != "disable"

    def get_ignored_inputs(self) -> tuple[str, ...]:
        return tuple(self.ignored_inputs)

    def get_version(self, params: Any = None) -> str:
        """The override if set, else a stable hash of the salt and the inputs' description."""
        if self.version_override:
            return self.version_override
        return hashlib.sha256(f"{self.salt}|{params!r}".encode()).hexdigest()


@dataclass(frozen=True)
class RetryStrategy:
    """Retry a task `count` times, optionally with a backoff. Example: RetryStrategy(count=5)"""

    count: int
    backoff: float | timedelta | None = None
    backoff_factor: int | float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 0:
            raise ValueError(f"count must be a non-negative int, got {self.count!r}")
        if self.backoff_factor is not None and self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be >= 1.0, got {self.backoff_factor}")


def _seconds(name: str, value: timedelta | int | None) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    raise ValueError(f"{name} must be a timedelta or a non-negative number of seconds, got {value!r}")


@dataclass(frozen=True)
class Timeout:
    """Maximum run time (one attempt) and maximum queued time of a task."""

    max_runtime: timedelta | int | None = None
    max_queued_time: timedelta | int | None = None
    deadline: timedelta | int | None = None

    def __post_init__(self) -> None:
        for name in ("max_runtime", "max_queued_time", "deadline"):
            object.__setattr__(self, name, _seconds(name, getattr(self, name)))


@dataclass(frozen=True)
class ReusePolicy:
    """Reuse task environments (containers) across invocations."""

    replicas: int | tuple[int, int] = 2
    idle_ttl: int | timedelta = 30
    concurrency: int = 1
    scaledown_ttl: int | timedelta = 30
    scope: Literal["global", "run"] = "global"

    def __post_init__(self) -> None:
        if self.scope not in ("global", "run"):
            raise ValueError('scope must be "global" or "run"')
        pair = self.replicas if isinstance(self.replicas, tuple) else (self.replicas, self.replicas)
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
            raise ValueError("replicas must be an int or a tuple of two ints")
        if min(pair) < 0 or pair[0] > pair[1]:
            raise ValueError(f"replicas must be >= 0 with min <= max, got {self.replicas!r}")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency!r}")
        for name in ("idle_ttl", "scaledown_ttl"):
            value = _seconds(name, getattr(self, name))
            if value is None or value < timedelta(seconds=30):
                raise ValueError(f"{name} must be at least 30 seconds")
            object.__setattr__(self, name, value)

    @property
    def min_replicas(self) -> int:
        return self.replicas[0] if isinstance(self.replicas, tuple) else self.replicas

    @property
    def max_replicas(self) -> int:
        return self.replicas[1] if isinstance(self.replicas, tuple) else self.replicas

    def get_scaledown_ttl(self) -> timedelta | None:
        return self.scaledown_ttl if isinstance(self.scaledown_ttl, timedelta) else None


@dataclass(frozen=True)
class PodTemplate:
    """A Kubernetes pod template for a task (`pod_spec` is a kubernetes V1PodSpec)."""

    pod_spec: Any = None
    primary_container_name: str = "primary"
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    def to_k8s_pod(self) -> Any:
        try:
            from kubernetes.client import V1ObjectMeta, V1Pod  # type: ignore[import-not-found]
        except ImportError:
            raise ImportError("to_k8s_pod needs the kubernetes package: pip install kubernetes") from None
        return V1Pod(metadata=V1ObjectMeta(labels=self.labels, annotations=self.annotations), spec=self.pod_spec)


@dataclass(frozen=True)
class Cron:
    """A cron schedule. Example: Cron("0 * * * *")"""

    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        fields = self.expression.split() if isinstance(self.expression, str) else []
        if len(fields) not in (5, 6) and not (isinstance(self.expression, str) and self.expression.startswith("@")):
            raise ValueError(f"{self.expression!r} is not a cron expression like '0 * * * *'")

    @property
    def timezone_expression(self) -> str:
        return f"CRON_TZ={self.timezone} {self.expression}"


@dataclass(frozen=True)
class FixedRate:
    """Run every `interval_minutes` minutes, from `start_time` if given."""

    interval_minutes: int
    start_time: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.interval_minutes, int) or self.interval_minutes < 1:
            raise ValueError(f"interval_minutes must be a positive int, got {self.interval_minutes!r}")


def _preset(expression: str, default_name: str, default_description: str) -> Any:
    def make(
        cls: type[Trigger],
        trigger_time_input_key: str | None = None,
        *,
        name: str = default_name,
        description: str = default_description,
        auto_activate: bool = True,
        inputs: dict[str, Any] | None = None,
        env_vars: dict[str, str] | None = None,
        interruptible: bool | None = None,
        overwrite_cache: bool = False,
        queue: str | None = None,
        max_action_concurrency: int | None = None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        custom_context: dict[str, str] | None = None,
    ) -> Trigger:
        if trigger_time_input_key is not None:
            inputs = {**(inputs or {}), trigger_time_input_key: "trigger time"}
        return cls(
            name=name, automation=Cron(expression), description=description, auto_activate=auto_activate,
            inputs=inputs, env_vars=env_vars, interruptible=interruptible, overwrite_cache=overwrite_cache,
            queue=queue, max_action_concurrency=max_action_concurrency, labels=labels, annotations=annotations,
            custom_context=custom_context,
        )  # fmt: skip

    make.__doc__ = f"A Cron trigger: {default_description.lower()} ({expression})."
    return classmethod(make)


@dataclass(frozen=True)
class Trigger:
    """A trigger to run a task on a schedule. Example: Trigger("nightly", Cron("0 3 * * *"))"""

    name: str
    automation: Cron | FixedRate | None = None
    description: str = ""
    auto_activate: bool = True
    inputs: dict[str, Any] | None = None
    env_vars: dict[str, str] | None = None
    interruptible: bool | None = None
    overwrite_cache: bool = False
    queue: str | None = None
    max_action_concurrency: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    notifications: Any = None
    custom_context: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a Trigger needs a name")
        if self.automation is not None and not isinstance(self.automation, (Cron, FixedRate)):
            raise ValueError(f"automation must be a Cron or a FixedRate, got {self.automation!r}")

    hourly = _preset("0 * * * *", "hourly", "A trigger that runs every hour")
    daily = _preset("0 0 * * *", "daily", "A trigger that runs daily at midnight")
    weekly = _preset("0 0 * * 0", "weekly", "A trigger that runs weekly on Sundays at midnight")
    monthly = _preset("0 0 1 * *", "monthly", "A trigger that runs monthly on the 1st at midnight")
    minutely = _preset("* * * * *", "minutely", "A trigger that runs every minute")
