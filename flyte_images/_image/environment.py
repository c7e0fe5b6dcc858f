"""Environments: named groups of tasks sharing an image, as in the Flyte SDK. The engine uses their
name, image (an Image, a reference, or "auto") and `depends_on` (followed by `build_images`); the
other fields are validated and carried as the SDK does, and tasks are recorded, not run.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, cast

from .. import _config
from .image import Image
from .policies import Cache, PodTemplate, RetryStrategy, ReusePolicy, Timeout, Trigger
from .resources import Resources
from .secret import SecretRequest, normalize_secrets

_NAME = re.compile(r"^[a-z0-9]+([_-][a-z0-9]+)*\Z")
ImageRequest = str | Image | None
CacheRequest = Literal["auto", "override", "disable"] | Cache


@dataclass(init=True, repr=True)
class Environment:
    """A named environment with an image, resources, secrets and env vars."""

    name: str
    depends_on: list[Environment] = field(default_factory=list)
    pod_template: str | PodTemplate | None = None
    description: str | None = None
    secrets: SecretRequest | None = None
    env_vars: dict[str, str] | None = None
    resources: Resources | None = None
    interruptible: bool = False
    image: ImageRequest = "auto"
    include: tuple[str, ...] = field(default_factory=tuple)
    service_account: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"Environment name {self.name!r} must be in snake_case or kebab-case format.")
        if self.image is not None and not isinstance(self.image, (str, Image)):
            raise TypeError(f"Expected image to be of type str or Image, got {type(self.image)}")
        if self.secrets is not None:
            normalize_secrets(self.secrets)
        if not isinstance(self.depends_on, list) or not all(isinstance(d, Environment) for d in self.depends_on):
            raise TypeError(f"Expected depends_on to be of type List[Environment], got {self.depends_on!r}")
        if self.resources is not None and not isinstance(self.resources, Resources):
            raise TypeError(f"Expected resources to be of type Resources, got {type(self.resources)}")
        if self.env_vars is not None and not (
            isinstance(self.env_vars, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in self.env_vars.items())
        ):
            raise TypeError(f"Expected env_vars to be of type Dict[str, str], got {type(self.env_vars)}")
        if self.pod_template is not None and not isinstance(self.pod_template, (str, PodTemplate)):
            raise TypeError(f"Expected pod_template to be of type str or PodTemplate, got {type(self.pod_template)}")
        if isinstance(self.include, str):
            raise TypeError(f"Expected include to be a sequence of str paths, got a bare str ({self.include!r}).")
        self.include = tuple(self.include)

    def add_dependency(self, *env: Environment) -> None:
        """Add environments this one depends on (their images are built with it)."""
        for e in env:
            if not isinstance(e, Environment):
                raise TypeError(f"Expected Environment, got {type(e)}")
            if e is self:
                raise ValueError("Cannot add self as a dependency")
            if e not in self.depends_on:
                self.depends_on.append(e)

    def clone_with(
        self,
        name: str,
        image: ImageRequest = None,
        resources: Resources | None = None,
        env_vars: dict[str, str] | None = None,
        secrets: SecretRequest | None = None,
        depends_on: list[Environment] | None = None,
        description: str | None = None,
        **kwargs: Any,
    ) -> Environment:
        """A copy with a new name and the given fields changed (None: kept)."""
        changes = dict(
            name=name, image=image, resources=resources, env_vars=env_vars, secrets=secrets,
            description=description, **kwargs,
        )  # fmt: skip
        unknown = sorted(set(changes) - {f.name for f in fields(self) if f.init})
        if unknown:
            raise TypeError(f"Unexpected keyword arguments: {unknown}")
        values = {k: v for k, v in changes.items() if v is not None}
        return replace(self, depends_on=list(self.depends_on if depends_on is None else depends_on), **values)


@dataclass(init=True, repr=True)
class TaskEnvironment(Environment):
    """An environment for a set of tasks. Example:

    env = TaskEnvironment(name="train", image=Image.from_debian_base().with_pip_packages("torch"))

    @env.task
    async def train() -> None: ...
    """

    cache: CacheRequest = "disable"
    reusable: ReusePolicy | None = None
    plugin_config: Any | None = None
    queue: str | None = None
    _tasks: dict[str, TaskTemplate] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reusable is not None and not isinstance(self.reusable, ReusePolicy):
            raise TypeError(f"Expected reusable to be of type ReusePolicy, got {type(self.reusable)}")
        if self.reusable is not None and self.plugin_config is not None:
            raise ValueError("Cannot set plugin_config when environment is reusable.")
        if not isinstance(self.cache, Cache) and self.cache not in ("auto", "override", "disable"):
            raise TypeError(f"Expected cache to be of type str or Cache, got {type(self.cache)}")

    def clone_with(
        self,
        name: str,
        image: ImageRequest = None,
        resources: Resources | None = None,
        env_vars: dict[str, str] | None = None,
        secrets: SecretRequest | None = None,
        depends_on: list[Environment] | None = None,
        description: str | None = None,
        interruptible: bool | None = None,
        include: tuple[str, ...] | None = None,
        service_account: str | None = None,
        **kwargs: Any,
    ) -> TaskEnvironment:
        """A copy with a new name and the given fields changed (also cache=, reusable=, ...), no tasks."""
        clone = super().clone_with(
            name, image, resources, env_vars, secrets, depends_on, description,
            interruptible=interruptible, include=include, service_account=service_account, **kwargs,
        )  # fmt: skip
        return cast(TaskEnvironment, clone)

    @property
    def tasks(self) -> dict[str, TaskTemplate]:
        """The tasks defined in this environment, by name."""
        return dict(self._tasks)

    def task(
        self,
        _func: Callable[..., Any] | None = None,
        *,
        short_name: str | None = None,
        cache: CacheRequest | None = None,
        retries: int | RetryStrategy = 0,
        timeout: Timeout | int | Any = 0,
        docs: Any | None = None,
        pod_template: str | PodTemplate | None = None,
        report: bool = False,
        interruptible: bool | None = None,
        max_inline_io_bytes: int = 10485760,
        queue: str | None = None,
        service_account: str | None = None,
        triggers: tuple[Trigger, ...] | Trigger = (),
        links: Any = (),
        task_resolver: Any | None = None,
        entrypoint: bool = False,
        produces_artifacts: bool = False,
    ) -> Any:
        """Record a function as a task of this environment; returns a callable wrapper."""

        def decorate(func: Callable[..., Any]) -> TaskTemplate:
            if self.reusable is not None and pod_template is not None:
                raise ValueError("Cannot set pod_template when environment is reusable.")
            retry = retries if isinstance(retries, RetryStrategy) else RetryStrategy(count=int(retries))
            template = TaskTemplate(
                func=func, environment=self, short_name=short_name or func.__name__, cache=cache or self.cache,
                retries=retry, timeout=timeout, interruptible=interruptible, queue=queue or self.queue,
                triggers=(triggers,) if isinstance(triggers, Trigger) else tuple(triggers),
            )  # fmt: skip
            self._tasks[f"{self.name}.{func.__name__}"] = template
            return template

        return decorate(_func) if _func is not None else decorate

    @classmethod
    def from_task(cls, name: str, *tasks: TaskTemplate, depends_on: list[Environment] | None = None) -> TaskEnvironment:
        """An environment for tasks defined elsewhere; they must share one image (or none: "auto")."""
        if not tasks:
            raise ValueError("from_task needs at least one task")
        images = {id(t.environment.image): t.environment.image for t in tasks}
        if len(images) > 1:
            raise ValueError("Tasks must have the same image to be in the same environment.")
        image = next(iter(images.values())) or "auto"
        env = cls(name=name, image=image, depends_on=list(depends_on or []))
        for t in tasks:
            env._tasks[f"{name}.{t.func.__name__}"] = t
        return env


@dataclass(eq=False)
class TaskTemplate:
    """A recorded task: calling it calls the function (locally; running on Flyte is the SDK's)."""

    func: Callable[..., Any]
    environment: TaskEnvironment
    short_name: str
    cache: CacheRequest = "disable"
    retries: RetryStrategy = field(default_factory=lambda: RetryStrategy(count=0))
    timeout: Any = 0
    interruptible: bool | None = None
    queue: str | None = None
    triggers: tuple[Trigger, ...] = ()

    def __post_init__(self) -> None:
        functools.update_wrapper(self, self.func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    @property
    def name(self) -> str:
        return f"{self.environment.name}.{self.func.__name__}"


def environment_closure(envs: tuple[Environment, ...]) -> list[Environment]:
    """The environments and everything they depend on, each once, in a stable order."""
    seen: dict[str, Environment] = {}

    def visit(env: Environment) -> None:
        if not isinstance(env, Environment):
            raise TypeError(f"build_images takes environments, got {type(env).__name__}")
        known = seen.get(env.name)
        if known is env:
            return
        if known is not None:
            raise ValueError(f"two different environments are named {env.name!r}; environment names must be unique")
        seen[env.name] = env
        for dependency in env.depends_on:
            visit(dependency)

    for env in envs:
        visit(env)
    return list(seen.values())


def image_of(env: Environment) -> Image | str:
    """The image an environment names; "auto" (or None) is the `default` reference when one is
    configured, else the Debian base."""
    if isinstance(env.image, Image):
        return env.image
    if env.image in (None, "auto"):
        return Image.from_ref_name("default") if "default" in _config.known_refs() else Image.from_debian_base()
    return str(env.image)
