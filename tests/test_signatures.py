"""The public signatures match the Flyte SDK's, so users port code by changing an import.

The expected signatures are written here as data (names, kinds, defaults), taken from the Flyte
SDK API reference and the `flyte` 2.12.1 release; the test runs on any machine.
"""

from __future__ import annotations

import inspect

import pytest

import flyte_images
from flyte_images import Image, Secret

P, K, V = "POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY", "VAR_POSITIONAL"
NO = "<none>"

# (parameter, kind, repr of the default or NO)
EXPECTED: dict[str, list[tuple[str, str, str]]] = {
    "Image": [
        ("base_image", P, "None"),
        ("dockerfile", P, "None"),
        ("registry", P, "None"),
        ("name", P, "None"),
        ("platform", P, "('linux/amd64',)"),
        ("python_version", P, "<factory>"),
        ("extendable", P, "False"),
        ("_is_cloned", P, "False"),
        ("_ref_name", P, "None"),
        ("_layers", P, "()"),
        ("_image_registry_secret", P, "None"),
    ],
    "Image.from_base": [("image_uri", P, NO)],
    "Image.from_debian_base": [
        ("python_version", P, "None"),
        ("flyte_version", P, "None"),
        ("install_flyte", P, "True"),
        ("registry", P, "None"),
        ("registry_secret", P, "None"),
        ("name", P, "None"),
        ("platform", P, "None"),
    ],
    "Image.from_dockerfile": [
        ("file", P, NO),
        ("registry", P, NO),
        ("name", P, NO),
        ("platform", P, "None"),
    ],
    "Image.from_uv_script": [
        ("script", P, NO),
        ("name", K, NO),
        ("registry", K, "None"),
        ("registry_secret", K, "None"),
        ("python_version", K, "None"),
        ("index_url", K, "None"),
        ("extra_index_urls", K, "None"),
        ("pre", K, "False"),
        ("extra_args", K, "None"),
        ("platform", K, "None"),
        ("secret_mounts", K, "None"),
    ],
    "Image.from_ref_name": [("name", P, "'default'")],
    "Image.from_pixi_script": [
        ("script", P, NO),
        ("name", K, NO),
        ("registry", K, "None"),
        ("registry_secret", K, "None"),
        ("environment", K, "'default'"),
        ("extra_args", K, "None"),
        ("platform", K, "None"),
        ("secret_mounts", K, "None"),
    ],
    "Image.clone": [
        ("self", P, NO),
        ("registry", P, "None"),
        ("registry_secret", P, "None"),
        ("name", P, "None"),
        ("base_image", P, "None"),
        ("python_version", P, "None"),
        ("addl_layer", P, "None"),
        ("extendable", P, "None"),
        ("platform", P, "None"),
    ],
    "Image.validate": [("self", P, NO)],
    "Image.with_apt_packages": [("self", P, NO), ("packages", V, NO), ("secret_mounts", K, "None")],
    "Image.with_code_bundle": [("self", P, NO), ("copy_style", P, "'loaded_modules'"), ("dst", P, "'.'")],
    "Image.with_commands": [("self", P, NO), ("commands", P, NO), ("secret_mounts", P, "None")],
    "Image.with_dockerignore": [("self", P, NO), ("path", P, NO)],
    "Image.with_env_vars": [("self", P, NO), ("env_vars", P, NO)],
    "Image.with_local_v2": [("self", P, NO)],
    "Image.with_pip_packages": [
        ("self", P, NO),
        ("packages", V, NO),
        ("index_url", K, "None"),
        ("extra_index_urls", K, "None"),
        ("pre", K, "False"),
        ("extra_args", K, "None"),
        ("secret_mounts", K, "None"),
    ],
    "Image.with_pixi_project": [
        ("self", P, NO),
        ("manifest_file", P, NO),
        ("pixi_lock", P, "None"),
        ("environment", P, "'default'"),
        ("extra_args", P, "None"),
        ("secret_mounts", P, "None"),
        ("project_install_mode", P, "'dependencies_only'"),
    ],
    "Image.with_poetry_project": [
        ("self", P, NO),
        ("pyproject_file", P, NO),
        ("poetry_lock", P, "None"),
        ("extra_args", P, "None"),
        ("secret_mounts", P, "None"),
        ("project_install_mode", P, "'dependencies_only'"),
    ],
    "Image.with_requirements": [
        ("self", P, NO),
        ("file", P, NO),
        ("index_url", P, "None"),
        ("extra_index_urls", P, "None"),
        ("pre", P, "False"),
        ("extra_args", P, "None"),
        ("secret_mounts", P, "None"),
    ],
    "Image.with_source_file": [("self", P, NO), ("src", P, NO), ("dst", P, "'.'")],
    "Image.with_source_folder": [
        ("self", P, NO),
        ("src", P, NO),
        ("dst", P, "'.'"),
        ("copy_contents_only", P, "False"),
    ],
    "Image.with_uv_project": [
        ("self", P, NO),
        ("pyproject_file", P, NO),
        ("uvlock", P, "None"),
        ("index_url", P, "None"),
        ("extra_index_urls", P, "None"),
        ("pre", P, "False"),
        ("extra_args", P, "None"),
        ("secret_mounts", P, "None"),
        ("project_install_mode", P, "'dependencies_only'"),
    ],
    "Image.with_workdir": [("self", P, NO), ("workdir", P, NO)],
    # flyte's ImageBuild is a dataclass (uri, remote_run, build_run=None); ours is the str of the
    # uri, so `remote_run` may be left out, and the details after it are keyword-only.
    "ImageBuild": [
        ("uri", P, NO),
        ("remote_run", P, "None"),
        ("build_run", P, "None"),
        ("built", K, "False"),
        ("reason", K, "''"),
        ("digest", K, "None"),
        ("dockerfile", K, "''"),
        ("path", K, "''"),
        ("nodes", K, "None"),
        ("waited", K, "None"),
    ],
    # flyte.build in 2.12.1 is (image, dry_run=False, force=False, wait=True); the options after
    # them are keyword-only additions of flyte-images.
    "build": [
        ("image", P, NO),
        ("dry_run", P, "False"),
        ("force", P, "False"),
        ("wait", P, "True"),
        ("platform", K, "None"),
        ("builder", K, "None"),
        ("push", K, "None"),
        ("cache_from", K, "()"),
        ("cache_to", K, "()"),
        ("ca_bundle", K, "None"),
        ("quiet", K, "False"),
        ("require_check", K, "None"),
        ("cache", K, "None"),
        ("no_cache", K, "False"),
        ("tags", K, "()"),
        ("compression", K, "None"),
    ],
    "init": [
        ("org", P, "None"),
        ("project", P, "None"),
        ("domain", P, "None"),
        ("root_dir", P, "None"),
        ("log_level", P, "None"),
        ("log_format", P, "None"),
        ("reset_root_logger", P, "False"),
        ("user_log_level", P, "None"),
        ("endpoint", P, "None"),
        ("headless", P, "False"),
        ("insecure", P, "False"),
        ("insecure_skip_verify", P, "False"),
        ("ca_cert_file_path", P, "None"),
        ("auth_type", P, "'Pkce'"),
        ("command", P, "None"),
        ("proxy_command", P, "None"),
        ("api_key", P, "None"),
        ("client_id", P, "None"),
        ("client_credentials_secret", P, "None"),
        ("auth_client_config", P, "None"),
        ("rpc_retries", P, "3"),
        ("http_proxy_url", P, "None"),
        ("disable_keyring", P, "False"),
        ("storage", P, "None"),
        ("batch_size", P, "1000"),
        ("image_builder", P, "'local'"),
        ("images", P, "None"),
        ("image_registry", P, "None"),
        ("source_config_path", P, "None"),
        ("sync_local_sys_paths", P, "True"),
        ("load_plugin_type_transformers", P, "True"),
        ("local_persistence", P, "False"),
        ("local_tracked", P, "False"),
        ("local_tracked_strict", P, "False"),
        ("scopes", P, "None"),
    ],
    "init_from_config": [
        ("path_or_config", P, "None"),
        ("root_dir", P, "None"),
        ("log_level", P, "None"),
        ("log_format", P, "'console'"),
        ("user_log_level", P, "None"),
        ("org", P, "None"),
        ("project", P, "None"),
        ("domain", P, "None"),
        ("storage", P, "None"),
        ("batch_size", P, "1000"),
        ("image_builder", P, "None"),
        ("images", P, "None"),
        ("sync_local_sys_paths", P, "True"),
    ],
    "build_images": [
        ("envs", V, NO),
        ("copy_style", K, "'loaded_modules'"),
        ("seed_cache", K, "None"),
        ("concurrency", K, "None"),
        ("force", K, "False"),
        ("dry_run", K, "False"),
        ("push", K, "None"),
        ("platform", K, "None"),
        ("builder", K, "None"),
        ("quiet", K, "False"),
        ("require_check", K, "None"),
        ("no_cache", K, "False"),
        ("tags", K, "()"),
        ("compression", K, "None"),
    ],
    "Environment": [
        ("name", P, NO),
        ("depends_on", P, "<factory>"),
        ("pod_template", P, "None"),
        ("description", P, "None"),
        ("secrets", P, "None"),
        ("env_vars", P, "None"),
        ("resources", P, "None"),
        ("interruptible", P, "False"),
        ("image", P, "'auto'"),
        ("include", P, "<factory>"),
        ("service_account", P, "None"),
    ],
    "TaskEnvironment": [
        ("name", P, NO),
        ("depends_on", P, "<factory>"),
        ("pod_template", P, "None"),
        ("description", P, "None"),
        ("secrets", P, "None"),
        ("env_vars", P, "None"),
        ("resources", P, "None"),
        ("interruptible", P, "False"),
        ("image", P, "'auto'"),
        ("include", P, "<factory>"),
        ("service_account", P, "None"),
        ("cache", P, "'disable'"),
        ("reusable", P, "None"),
        ("plugin_config", P, "None"),
        ("queue", P, "None"),
    ],
    "Environment.add_dependency": [("self", P, NO), ("env", V, NO)],
    "Environment.clone_with": [
        ("self", P, NO),
        ("name", P, NO),
        ("image", P, "None"),
        ("resources", P, "None"),
        ("env_vars", P, "None"),
        ("secrets", P, "None"),
        ("depends_on", P, "None"),
        ("description", P, "None"),
        ("kwargs", "VAR_KEYWORD", NO),
    ],
    "TaskEnvironment.clone_with": [
        ("self", P, NO),
        ("name", P, NO),
        ("image", P, "None"),
        ("resources", P, "None"),
        ("env_vars", P, "None"),
        ("secrets", P, "None"),
        ("depends_on", P, "None"),
        ("description", P, "None"),
        ("interruptible", P, "None"),
        ("include", P, "None"),
        ("service_account", P, "None"),
        ("kwargs", "VAR_KEYWORD", NO),
    ],
    "TaskEnvironment.from_task": [("name", P, NO), ("tasks", V, NO), ("depends_on", K, "None")],
    "TaskEnvironment.task": [
        ("self", P, NO),
        ("_func", P, "None"),
        ("short_name", K, "None"),
        ("cache", K, "None"),
        ("retries", K, "0"),
        ("timeout", K, "0"),
        ("docs", K, "None"),
        ("pod_template", K, "None"),
        ("report", K, "False"),
        ("interruptible", K, "None"),
        ("max_inline_io_bytes", K, "10485760"),
        ("queue", K, "None"),
        ("service_account", K, "None"),
        ("triggers", K, "()"),
        ("links", K, "()"),
        ("task_resolver", K, "None"),
        ("entrypoint", K, "False"),
        ("produces_artifacts", K, "False"),
    ],
    "Resources": [
        ("cpu", P, "None"),
        ("memory", P, "None"),
        ("gpu", P, "None"),
        ("disk", P, "None"),
        ("shm", P, "None"),
    ],
    "Resources.get_device": [("self", P, NO)],
    "Resources.get_shared_memory": [("self", P, NO)],
    "Device": [("quantity", P, NO), ("device_class", P, NO), ("device", P, "None"), ("partition", P, "None")],
    "GPU": [("device", P, NO), ("quantity", P, NO), ("partition", P, "None")],
    "TPU": [("device", P, NO), ("partition", P, "None")],
    "Neuron": [("device", P, NO)],
    "AMD_GPU": [("device", P, NO)],
    "HABANA_GAUDI": [("device", P, NO)],
    "PodTemplate": [
        ("pod_spec", P, "None"),
        ("primary_container_name", P, "'primary'"),
        ("labels", P, "None"),
        ("annotations", P, "None"),
    ],
    "Cache": [
        ("behavior", P, NO),
        ("version_override", P, "None"),
        ("serialize", P, "False"),
        ("ignored_inputs", P, "<factory>"),
        ("salt", P, "''"),
        ("policies", P, "None"),
        ("max_age", P, "None"),
    ],
    "RetryStrategy": [("count", P, NO), ("backoff", P, "None"), ("backoff_factor", P, "None")],
    "Timeout": [("max_runtime", P, "None"), ("max_queued_time", P, "None"), ("deadline", P, "None")],
    "ReusePolicy": [
        ("replicas", P, "2"),
        ("idle_ttl", P, "30"),
        ("concurrency", P, "1"),
        ("scaledown_ttl", P, "30"),
        ("scope", P, "'global'"),
    ],
    "Trigger": [
        ("name", P, NO),
        ("automation", P, "None"),
        ("description", P, "''"),
        ("auto_activate", P, "True"),
        ("inputs", P, "None"),
        ("env_vars", P, "None"),
        ("interruptible", P, "None"),
        ("overwrite_cache", P, "False"),
        ("queue", P, "None"),
        ("max_action_concurrency", P, "None"),
        ("labels", P, "None"),
        ("annotations", P, "None"),
        ("notifications", P, "None"),
        ("custom_context", P, "None"),
    ],
    "Trigger.hourly": [
        ("trigger_time_input_key", P, "None"),
        ("name", K, "'hourly'"),
        ("description", K, "'A trigger that runs every hour'"),
        ("auto_activate", K, "True"),
        ("inputs", K, "None"),
        ("env_vars", K, "None"),
        ("interruptible", K, "None"),
        ("overwrite_cache", K, "False"),
        ("queue", K, "None"),
        ("max_action_concurrency", K, "None"),
        ("labels", K, "None"),
        ("annotations", K, "None"),
        ("custom_context", K, "None"),
    ],
    "Cron": [("expression", P, NO), ("timezone", P, "'UTC'")],
    "FixedRate": [("interval_minutes", P, NO), ("start_time", P, "None")],
    "version": [],
    "Secret": [
        ("key", P, NO),
        ("group", P, "None"),
        ("mount", P, "None"),
        ("as_env_var", P, "None"),
    ],
}

# The parameters the API reference page lists, in its order: ours must contain them in order
# (the page omits some parameters that the released SDK has, and the `self` of methods).
REFERENCE_PAGE: dict[str, list[str]] = {
    "Image": [
        "base_image", "dockerfile", "registry", "name", "platform", "python_version",
        "_ref_name", "_layers", "_image_registry_secret",
    ],
    "Image.clone": ["registry", "registry_secret", "name", "base_image", "python_version", "addl_layer"],
    "Image.with_requirements": ["file", "secret_mounts"],
    "init": [
        "org", "project", "domain", "root_dir", "log_level", "log_format", "endpoint", "headless",
        "insecure", "insecure_skip_verify", "ca_cert_file_path", "auth_type", "command",
        "proxy_command", "api_key", "client_id", "client_credentials_secret", "auth_client_config",
        "rpc_retries", "http_proxy_url", "storage", "batch_size", "image_builder", "images",
        "source_config_path", "sync_local_sys_paths", "load_plugin_type_transformers",
    ],
    "TaskEnvironment": [
        "name", "depends_on", "pod_template", "description", "secrets", "env_vars", "resources",
        "interruptible", "image", "cache", "reusable", "plugin_config", "queue",
    ],
    "RetryStrategy": ["count", "backoff", "backoff_factor"],
    "init_from_config": [
        "path_or_config", "root_dir", "log_level", "log_format", "storage", "images", "sync_local_sys_paths",
    ],
    "Image.with_source_file": ["src", "dst"],
}  # fmt: skip


def _target(path: str) -> object:
    obj: object = flyte_images
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _describe(obj: object) -> list[tuple[str, str, str]]:
    rows = []
    for p in inspect.signature(obj).parameters.values():  # type: ignore[arg-type]
        default = NO if p.default is inspect.Parameter.empty else repr(p.default)
        rows.append((p.name, p.kind.name, default))
    return rows


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_signature_matches_the_sdk(path: str) -> None:
    assert _describe(_target(path)) == EXPECTED[path]


@pytest.mark.parametrize("path", sorted(REFERENCE_PAGE))
def test_reference_page_parameters_appear_in_order(path: str) -> None:
    names = [n for n, _, _ in _describe(_target(path)) if n != "self"]
    positions = [names.index(n) for n in REFERENCE_PAGE[path]]
    assert positions == sorted(positions)


def test_every_seed_method_exists() -> None:
    methods = [p.split(".", 1)[1] for p in EXPECTED if p.startswith("Image.")]
    assert len(methods) == 22
    for name in methods:
        assert callable(getattr(Image, name))
    assert isinstance(Image.uri, property)
    assert isinstance(Image.identifier, property)
    assert Secret("k").key == "k"
