"""The environment data model: the SDK's names, parameters and validation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flyte_images import (
    AMD_GPU,
    GPU,
    HABANA_GAUDI,
    TPU,
    Cache,
    Cron,
    Environment,
    FixedRate,
    Image,
    ImageCache,
    InvalidLayerArgument,
    Neuron,
    Resources,
    RetryStrategy,
    ReusePolicy,
    Secret,
    TaskEnvironment,
    Timeout,
    Trigger,
)
from flyte_images._image.environment import environment_closure, image_of


def test_task_decorator_records_tasks_and_returns_a_callable() -> None:
    env = TaskEnvironment(name="my-env", resources=Resources(cpu=1, memory="1Gi"))

    @env.task
    def add(x: int) -> int:
        return x + 1

    @env.task(retries=3, short_name="double")
    def twice(x: int) -> int:
        return 2 * x

    assert add(1) == 2 and twice(3) == 6
    assert sorted(env.tasks) == ["my-env.add", "my-env.twice"]
    assert env.tasks["my-env.twice"].retries == RetryStrategy(count=3)
    assert add.__name__ == "add"


@pytest.mark.parametrize("name", ["My Env", "env!", "", "UPPER", "-lead"])
def test_environment_names_must_be_snake_or_kebab_case(name: str) -> None:
    with pytest.raises(ValueError, match="snake_case or kebab-case"):
        TaskEnvironment(name=name)


def test_environment_type_checks() -> None:
    with pytest.raises(TypeError, match="image"):
        TaskEnvironment(name="a", image=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="depends_on"):
        TaskEnvironment(name="a", depends_on=["b"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="env_vars"):
        TaskEnvironment(name="a", env_vars={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="plugin_config"):
        TaskEnvironment(name="a", reusable=ReusePolicy(), plugin_config=object())
    with pytest.raises(TypeError, match="cache"):
        TaskEnvironment(name="a", cache="sometimes")  # type: ignore[arg-type]


def test_dependencies_clone_and_from_task() -> None:
    base = TaskEnvironment(name="base", image="python:3.12-slim")
    other = TaskEnvironment(name="other")
    base.add_dependency(other)
    base.add_dependency(other)
    assert base.depends_on == [other]
    with pytest.raises(ValueError, match="self"):
        base.add_dependency(base)
    clone = base.clone_with("copy", env_vars={"A": "1"}, cache="auto")
    assert (clone.name, clone.env_vars, clone.cache, clone.image) == ("copy", {"A": "1"}, "auto", "python:3.12-slim")
    assert clone.depends_on == [other] and clone.depends_on is not base.depends_on
    with pytest.raises(TypeError, match="Unexpected keyword"):
        base.clone_with("x", colour="red")

    @base.task
    def t1() -> None: ...

    @base.task
    def t2() -> None: ...

    derived = TaskEnvironment.from_task("derived", t1, t2)
    assert derived.image == "python:3.12-slim" and sorted(derived.tasks) == ["derived.t1", "derived.t2"]
    lone = TaskEnvironment(name="lone", image=Image.from_base("x:1"))

    @lone.task
    def t3() -> None: ...

    with pytest.raises(ValueError, match="same image"):
        TaskEnvironment.from_task("mixed", t1, t3)


def test_resources_and_devices() -> None:
    assert Resources(gpu="A100:8").get_device() == GPU("A100", 8)
    assert Resources(gpu="A100 80G:2").gpu == "A100_80G:2"
    assert Resources(gpu=0).get_device() is None
    assert Resources(gpu="Trn1:16").get_device().device_class == "NEURON"  # type: ignore[union-attr]
    assert Resources(cpu=(1, 2), memory=("1Gi", "2Gi"), shm="auto").get_shared_memory() == "auto"
    for bad, message in [
        ({"memory": 1024}, "Kubernetes quantity"),
        ({"cpu": -1}, "greater than or equal to 0"),
        ({"cpu": (1, None)}, "both be set"),
        ({"gpu": "A100:9"}, "accelerator"),
        ({"gpu": ("A100", 2)}, "accelerator"),
        ({"memory": ("1Gi",)}, "exactly two"),
    ]:
        with pytest.raises(ValueError, match=message):
            Resources(**bad)  # type: ignore[arg-type]
    assert GPU("H100", 1, partition="1g.10gb").partition == "1g.10gb"
    with pytest.raises(ValueError, match="partition for T4"):
        GPU("T4", 1, partition="1g.5gb")
    with pytest.raises(ValueError, match="at least 1"):
        GPU("T4", 0)  # type: ignore[arg-type]
    assert TPU("V5P", "2x2x1").device_class == "TPU"
    with pytest.raises(ValueError, match="partition for V6E"):
        TPU("V6E", "2x2x1")
    assert Neuron("Inf2").device == "Inf2" and AMD_GPU("MI300X").quantity == 1
    assert HABANA_GAUDI("Gaudi1").device_class == "HABANA_GAUDI"


def test_policies_and_triggers() -> None:
    assert Cache("auto", ignored_inputs="x").get_ignored_inputs() == ("x",)
    assert not Cache("disable").is_enabled() and Cache("auto", version_override="v7").get_version() == "v7"
    with pytest.raises(ValueError, match="behavior"):
        Cache("sometimes")  # type: ignore[arg-type]
    assert Timeout(max_runtime=60).max_runtime == timedelta(seconds=60)
    reuse = ReusePolicy(replicas=(1, 4), idle_ttl=60)
    assert (reuse.min_replicas, reuse.max_replicas, reuse.idle_ttl) == (1, 4, timedelta(seconds=60))
    for bad in ({"replicas": (3, 1)}, {"idle_ttl": 5}, {"concurrency": 0}, {"scope": "cluster"}):
        with pytest.raises(ValueError):
            ReusePolicy(**bad)  # type: ignore[arg-type]
    hourly = Trigger.hourly("when")
    assert hourly.automation == Cron("0 * * * *") and hourly.inputs == {"when": "trigger time"}
    assert Trigger.daily().name == "daily" and Cron("0 3 * * *").timezone_expression == "CRON_TZ=UTC 0 3 * * *"
    with pytest.raises(ValueError, match="cron"):
        Cron("every day")
    with pytest.raises(ValueError, match="interval"):
        FixedRate(0)


def test_closure_walks_dependencies_once_and_refuses_duplicate_names() -> None:
    a = TaskEnvironment(name="a")
    b = TaskEnvironment(name="b", depends_on=[a])
    c = TaskEnvironment(name="c", depends_on=[a, b])
    assert [e.name for e in environment_closure((c, b))] == ["c", "a", "b"]
    with pytest.raises(ValueError, match="two different environments are named 'a'"):
        environment_closure((a, TaskEnvironment(name="a")))


def test_auto_means_the_default_image_or_the_default_ref() -> None:
    import flyte_images

    env = TaskEnvironment(name="x")
    auto = image_of(env)
    assert isinstance(auto, Image) and auto == Image.from_debian_base()
    flyte_images.init(images={"default": "ghcr.io/acme/base:1"})
    resolved = image_of(env)
    assert isinstance(resolved, Image) and resolved.uri == "ghcr.io/acme/base:1"
    assert image_of(TaskEnvironment(name="y", image="python:3.12")) == "python:3.12"
    TaskEnvironment(name="s", secrets=["a", Secret("b")])
    with pytest.raises(InvalidLayerArgument, match="secret_mounts"):
        TaskEnvironment(name="s", secrets=[3])  # type: ignore[list-item]


def test_image_cache_json_and_transport_round_trip_deterministically() -> None:
    cache = ImageCache(
        image_lookup={"b": "r/x:1", "a": "r/y:2"},
        identifiers={"b": "1", "a": "2"},
        digests={"b": "sha256:1", "a": None},
        status={"b": "built", "a": "exists"},
        reasons={"b": "built in 1.0 s", "a": "already in the registry"},
    )
    text = cache.to_json()
    assert text.index('"a"') < text.index('"b"')  # stable ordering
    assert ImageCache.from_json(text) == cache
    assert ImageCache.from_transport(cache.to_transport) == cache
    assert cache.to_transport == cache.to_transport
    assert isinstance(Environment(name="plain"), Environment)


def test_images_build_in_threads_at_most_so_many_at_once() -> None:
    """A deploy's builds: at most `workers` at once, started in order; the first failure in
    order is raised once the running jobs are done, and the jobs not started by then never start."""
    import threading
    import time

    from flyte_images._build import deploy as _deploy

    lock = threading.Lock()
    running, most, started = [0], [0], []

    def job(n: int) -> None:
        with lock:
            started.append(n)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        if n in (3, 5):
            raise RuntimeError(f"job {n}")

    _deploy._in_threads(job, [0, 1, 2], 2)  # type: ignore[arg-type]
    assert sorted(started) == [0, 1, 2] and most[0] == 2
    started.clear()
    with pytest.raises(RuntimeError, match="job 3"):
        _deploy._in_threads(job, list(range(20)), 2)  # type: ignore[arg-type]
    assert running[0] == 0  # nothing still running when the error is raised
    assert started == sorted(started)[: len(started)] and 3 in started and len(started) < 20
    assert threading.active_count() == 1 or all(
        not t.name.startswith("flyte-images-build") for t in threading.enumerate()
    )
