"""A new image from an existing one in a registry plus layers made here: no build engine.

    base manifest + config --(append layers, merge Env, set WorkingDir and Labels)--> new
    config blob + manifest, PUT under the target reference

Only single-platform images are handled: a base that is an index with one real platform (how
BuildKit pushes one platform with its attestations) stands for that platform; an index with
several platforms is refused with the reason (writing an index per platform is left to do).
The target must be in the same registry host and repository as the base: layers are not
copied between repositories (no cross-repository mount yet).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

from .._errors import RegistryError
from .._registry import wire
from .._registry.client import Reference, parse_reference
from .._registry.push import Pusher
from .tarball import LayerBlob

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
UNKNOWN_PLATFORM = "unknown/unknown"  # BuildKit's attestation manifests in an index


def merge_env(current: Sequence[str], env: Iterable[tuple[str, str]]) -> list[str]:
    """Env after `ENV k=v ...`: a variable set again keeps its place, a new one is appended."""
    out = list(current)
    for key, value in env:
        entry = f"{key}={value}"
        for i, item in enumerate(out):
            if item.partition("=")[0] == key:
                out[i] = entry
                break
        else:
            out.append(entry)
    return out


def new_config(
    config: Mapping[str, Any],
    layers: Sequence[LayerBlob],
    *,
    env: Iterable[tuple[str, str]] = (),
    workdir: str | None = None,
    labels: Mapping[str, str] | None = None,
    history: Sequence[str] = (),
) -> dict[str, Any]:
    """The image config with `layers` on top and the run config changed as the Dockerfile would.

    `history` are the texts of instructions that add no layer (ENV, WORKDIR), recorded after
    the layers' own entries as empty layers. Times are the base config's, so the same base and
    layers always give the same config (and the same image digest)."""
    out: dict[str, Any] = json.loads(json.dumps(config))  # a deep copy that only holds JSON values
    created = out.get("created")
    rootfs = out.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("diff_ids", []).extend(layer.diff_id for layer in layers)
    entries = out.setdefault("history", [])
    for layer in layers:
        entries.append(_history(created, layer.created_by or "COPY", empty=False))
    for text in history:
        entries.append(_history(created, text, empty=True))
    run = out.get("config") or {}
    out["config"] = run
    env = list(env)
    if env:
        run["Env"] = merge_env(run.get("Env") or [], env)
    if workdir is not None:
        run["WorkingDir"] = workdir
    if labels:
        run["Labels"] = {**(run.get("Labels") or {}), **labels}
    return out


def _history(created: Any, text: str, *, empty: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"created_by": text, "comment": "flyte-images append"}
    if created is not None:
        entry["created"] = created
    if empty:
        entry["empty_layer"] = True
    return entry


async def append_async(
    base_ref: str,
    layers: Sequence[LayerBlob],
    target_ref: str,
    *,
    env: Iterable[tuple[str, str]] = (),
    workdir: str | None = None,
    labels: Mapping[str, str] | None = None,
    history: Sequence[str] = (),
    insecure: Sequence[str] = (),
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """Push `base_ref` + `layers` (+ the config changes) as `target_ref`; return the manifest's
    digest. See `append`."""
    base, target = parse_reference(base_ref), parse_reference(target_ref)
    if (base.host, base.repository) != (target.host, target.repository):
        raise RegistryError(
            f"{target_ref} is not in the repository of {base_ref}; appending reuses the base's layers in place, "
            f"so push the base to {target.host}/{target.repository} first"
        )
    if target.by_digest:
        raise RegistryError(f"{target_ref} names a digest; give a tag to push the appended image under")
    async with Pusher(insecure=insecure, transport=transport) as pusher:
        manifest, media = await _single_manifest(pusher, base)
        config_desc = manifest.get("config") or {}
        config_digest = config_desc.get("digest")
        if not isinstance(config_digest, str) or not wire.is_digest(config_digest):
            raise RegistryError(f"the manifest of {base_ref} has no config digest; is it an image manifest?")
        config = json.loads(await pusher.blob(base, config_digest))
        if not isinstance(config, dict):
            raise RegistryError(f"the config blob of {base_ref} is not a JSON object")
        # Blobs in parallel: each is HEADed first and only sent when the repository lacks it.
        await asyncio.gather(*(pusher.push_blob(target, layer.data, layer.digest) for layer in layers))
        config_bytes = json.dumps(
            new_config(config, layers, env=env, workdir=workdir, labels=labels, history=history),
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        config_blob_digest = wire.sha256(config_bytes)
        await pusher.push_blob(target, config_bytes, config_blob_digest)
        layer_type = OCI_LAYER if media == OCI_MANIFEST else DOCKER_LAYER
        document = dict(manifest)
        document["config"] = {**config_desc, "digest": config_blob_digest, "size": len(config_bytes)}
        document["layers"] = [*(manifest.get("layers") or []), *_descriptors(layers, layer_type)]
        return await pusher.put_manifest(target, document, media)


def _descriptors(layers: Sequence[LayerBlob], media_type: str) -> list[dict[str, Any]]:
    return [{"mediaType": media_type, "digest": layer.digest, "size": layer.size} for layer in layers]


async def _single_manifest(pusher: Pusher, ref: Reference) -> tuple[dict[str, Any], str]:
    """The image manifest of `ref` (the one real platform of an index) and its media type."""
    fetched = await pusher.manifest(ref)
    if fetched.media_type in wire.INDEX_TYPES:
        index = wire.parse(wire.Index, fetched.content, f"the index of {ref}")
        real = [m for m in index.manifests if m.platform is None or str(m.platform) != UNKNOWN_PLATFORM]
        if len(real) != 1:
            shown = ", ".join(str(m.platform) for m in real) or "none"
            raise RegistryError(
                f"{ref} is a multi-platform index ({shown}); appending supports one platform so far: build with "
                "the engine, or append to each platform's image"
            )
        fetched = await pusher.manifest(Reference(ref.host, ref.repository, real[0].digest))
    if fetched.media_type not in wire.MANIFEST_TYPES:
        raise RegistryError(f"{ref} is a {fetched.media_type[:60]!r}, not an image manifest to append to")
    document = json.loads(fetched.content)
    if not isinstance(document, dict):
        raise RegistryError(f"the manifest of {ref} is not a JSON object")
    return document, fetched.media_type


def append(
    base_ref: str,
    layers: Sequence[LayerBlob],
    target_ref: str,
    *,
    env: Iterable[tuple[str, str]] = (),
    workdir: str | None = None,
    labels: Mapping[str, str] | None = None,
    history: Sequence[str] = (),
    insecure: Sequence[str] = (),
) -> str:
    """Append `layers` to the single-platform image `base_ref` and push it as `target_ref`.

    The layer blobs are uploaded unless the repository has them; the new config appends their
    diff_ids and history, merges `env` into Env as ENV would, sets WorkingDir to `workdir` and
    adds `labels` (the identity label among them); the manifest lists the base's layers and
    these. Returns the new manifest's digest. No build engine is involved."""
    return asyncio.run(
        append_async(
            base_ref,
            layers,
            target_ref,
            env=env,
            workdir=workdir,
            labels=labels,
            history=history,
            insecure=insecure,
        )
    )
