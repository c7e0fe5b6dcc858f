"""A new image from one in a registry plus layers made here, without a build engine: per platform
a new config (layers appended, Env merged, WorkingDir and Labels set) and manifest, and for a
base of several platforms an index under the target tag (each manifest pushed by digest).

A base index with one real platform (how BuildKit pushes one platform with its attestations)
stands for that platform. BuildKit's attestation manifests are left out: they describe the
base's build, not this image. The target must be in the base's repository: its layers are
reused in place, never copied.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import RegistryError
from .._registry import Reference, Registry, parse_reference, wire
from .._registry.transport import HTTPTransport
from .split import FilePart
from .tarball import LayerBlob

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"
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
    """The image config with `layers` on top and the run config changed as the Dockerfile would;
    `history`: the texts of ENV and WORKDIR, recorded as empty layers. Times are the base
    config's, so the same base and layers always give the same config (and image digest)."""
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


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image of the base: where it is, its manifest and its config."""

    ref: Reference  # the base's repository, by this manifest's digest
    platform: str  # "linux/amd64"; "" when neither index nor config says
    manifest: Mapping[str, Any]
    media_type: str
    config: Mapping[str, Any]
    entry: Mapping[str, Any] | None  # its descriptor in the base's index (None: a plain manifest)

    @property
    def workdir(self) -> str:
        return str((self.config.get("config") or {}).get("WorkingDir") or "/")


async def append_parts(
    registry: Registry, base_ref: str, target_ref: str, make: Callable[[PlatformImage], Awaitable[FilePart]]
) -> str:
    """Push the base plus, per platform, the file part `make` returns for it, as `target_ref`;
    return the digest of what the tag names (the manifest, or the index of several)."""
    base, target = parse_reference(base_ref), parse_reference(target_ref)
    if (base.host, base.repository) != (target.host, target.repository):
        raise RegistryError(
            f"{target_ref} is not in the repository of {base_ref}; appending reuses the base's layers in place, "
            f"so push the base to {target.host}/{target.repository} first"
        )
    if target.by_digest:
        raise RegistryError(f"{target_ref} names a digest; give a tag to push the appended image under")
    images, index = await read_base(registry, base)
    parts = [await make(image) for image in images]
    configs = [
        wire.dumps(new_config(image.config, p.layers, env=p.env, workdir=p.workdir, labels=p.labels, history=p.history))
        for image, p in zip(images, parts, strict=True)
    ]
    layers = {layer.digest: layer for part in parts for layer in part.layers}
    # Every blob in parallel, each once. A layer is sent only when the repository lacks it. A
    # config is sent without asking: it names this build's layers, so it is new unless those
    # were all there already, and a few KiB sent again cost less than a request each time.
    config_blobs = {wire.sha256(data): data for data in configs}
    # A spooled layer is sent from its temporary file a chunk at a time, several at once.
    await asyncio.gather(
        *(
            registry.push_blob(target, layer if layer.spooled else layer.content(), layer.digest)
            for layer in layers.values()
        ),
        *(registry.push_blob(target, data, digest, ask=False) for digest, data in config_blobs.items()),
    )
    if index is None:
        return (await _push_manifest(registry, images[0], parts[0], configs[0], target, tagged=True))[0]
    pushed = await asyncio.gather(
        *(
            _push_manifest(registry, image, part, config, target, tagged=False)
            for image, part, config in zip(images, parts, configs, strict=True)
        )
    )
    entries = []
    for image, (digest, size) in zip(images, pushed, strict=True):
        assert image.entry is not None
        entries.append({**image.entry, "digest": digest, "size": size})
    document = {**index[0], "manifests": entries}
    return await registry.put_manifest(target, document, index[1])


async def _push_manifest(
    registry: Registry,
    image: PlatformImage,
    part: FilePart,
    config: bytes,
    target: Reference,
    *,
    tagged: bool,
) -> tuple[str, int]:
    """The manifest of one platform (its blobs pushed), under `target`'s tag or (one of several
    platforms, listed by an index) by digest only; returns the manifest's digest and size."""
    document = dict(image.manifest)
    config_desc = dict(document.get("config") or {})
    document["config"] = {**config_desc, "digest": wire.sha256(config), "size": len(config)}
    added = [
        {"mediaType": layer_media_type(image.media_type, layer.compression), "digest": layer.digest, "size": layer.size}
        for layer in part.layers
    ]
    document["layers"] = [*(document.get("layers") or []), *added]
    content = wire.dumps(document)
    digest = wire.sha256(content)
    where = target if tagged else Reference(target.host, target.repository, digest)
    return await registry.put_manifest(where, content, image.media_type), len(content)


def layer_media_type(manifest_type: str, compression: str) -> str:
    """The media type of a layer with `compression` in a manifest of `manifest_type`."""
    if manifest_type == OCI_MANIFEST:
        return OCI_ZSTD_LAYER if compression == "zstd" else OCI_LAYER
    if compression == "zstd":
        raise RegistryError(
            "a Docker image manifest has no zstd layer type: append zstd layers to an image with OCI media "
            "types (BuildKit's oci-mediatypes=true, as compression='zstd' builds it), or make them gzip"
        )
    return DOCKER_LAYER


def compression_of(image: PlatformImage) -> str:
    """The compression of the image's top layer ("gzip" for a plain tar or no layer): appended
    layers follow it unless asked otherwise, so an image stays one compression."""
    layers = image.manifest.get("layers") or []
    media = layers[-1].get("mediaType") if layers and isinstance(layers[-1], dict) else None
    return "zstd" if isinstance(media, str) and media.endswith(("+zstd", ".zstd")) else "gzip"


async def read_base(
    registry: Registry, ref: Reference
) -> tuple[list[PlatformImage], tuple[dict[str, Any], str] | None]:
    """The base's image per platform, and its index document and media type when the result
    needs one (several real platforms)."""
    fetched = await registry.manifest(ref)
    if fetched.media_type in wire.INDEX_TYPES:
        document = _object(fetched.content, f"the index of {ref}")
        wire.parse(wire.Index, fetched.content, f"the index of {ref}")
        entries = [
            e
            for e in document.get("manifests") or []
            if isinstance(e, dict) and _platform_text(e.get("platform")) != UNKNOWN_PLATFORM
        ]
        if not entries:
            raise RegistryError(f"the index of {ref} lists no image for any platform; build the base again")
        images = await asyncio.gather(*(_image(registry, ref, e) for e in entries))
        if len(images) == 1:
            return [images[0]], None
        return list(images), (document, fetched.media_type)
    return [await _image(registry, ref, None, fetched)], None


async def _image(
    registry: Registry, ref: Reference, entry: dict[str, Any] | None, fetched: Any = None
) -> PlatformImage:
    if fetched is None:
        assert entry is not None
        fetched = await registry.manifest(Reference(ref.host, ref.repository, str(entry.get("digest"))))
    if fetched.media_type not in wire.MANIFEST_TYPES:
        raise RegistryError(f"{ref} is a {fetched.media_type[:60]!r}, not an image manifest to append to")
    manifest = _object(fetched.content, f"the manifest of {ref}")
    config_digest = (manifest.get("config") or {}).get("digest")
    if not isinstance(config_digest, str) or not wire.is_digest(config_digest):
        raise RegistryError(f"the manifest of {ref} has no config digest; is it an image manifest?")
    config = _object(await registry.blob(ref, config_digest), f"the config blob of {ref}")
    platform = _platform_text(entry.get("platform") if entry else None) or _platform_text(config)
    here = Reference(ref.host, ref.repository, fetched.digest)
    return PlatformImage(here, platform, manifest, fetched.media_type, config, entry)


def _platform_text(value: Any) -> str:
    if not isinstance(value, dict) or not value.get("os") or not value.get("architecture"):
        return ""
    text = f"{value['os']}/{value['architecture']}"
    return f"{text}/{value['variant']}" if value.get("variant") else text


def _object(content: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(content)
    except ValueError as exc:
        raise RegistryError(f"{what} is not JSON ({exc}); push the base image again") from exc
    if not isinstance(document, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return document


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
    transport: HTTPTransport | None = None,
) -> str:
    """Append `layers` to the image `base_ref` and push it as `target_ref` (each platform's config
    gets their diff_ids and history, `env` merged as ENV would, `workdir` and `labels`); return
    the digest the tag names."""
    part = FilePart(list(layers), list(env), workdir, list(history), dict(labels or {}))

    async def same(_image: PlatformImage) -> FilePart:
        return part

    async with Registry(insecure=insecure, transport=transport) as registry:
        return await append_parts(registry, base_ref, target_ref, same)
