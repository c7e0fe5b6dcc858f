"""The registry's wire shapes read strictly and say what is wrong where, never with the value.

The messages are the ones pydantic's strict mode gave when these were pydantic models: the
fault's dotted path, what was expected, and how many other problems there were.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys

import pytest

from flyte_images._errors import RegistryError
from flyte_images._registry import wire

SECRET = "hunter2-s3cr3t"
DIGEST = "sha256:" + "ab" * 32
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def fails(model: type, document: object | bytes) -> str:
    content = document if isinstance(document, bytes) else json.dumps(document).encode()
    with pytest.raises(RegistryError) as caught:
        wire.parse(model, content, "the answer", "fix it")
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    text = str(caught.value)
    assert text.startswith("the answer ") and text.endswith("; fix it")
    return text.removeprefix("the answer ").removesuffix("; fix it")


def descriptor(**fields: object) -> dict[str, object]:
    return {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 12, **fields}


@pytest.mark.parametrize(
    ("model", "document", "expected"),
    [
        (wire.Index, [1, 2], "has the wrong shape at the top level: Input should be an object"),
        (wire.Index, None, "has the wrong shape at the top level: Input should be an object"),
        (
            wire.Index,
            {"schemaVersion": 2, "manifests": [descriptor(platform={"os": 5, "architecture": "amd64"})]},
            "has the wrong shape at manifests.0.platform.os: Input should be a valid string",
        ),
        (
            wire.Index,
            {"schemaVersion": 2, "manifests": [descriptor(), descriptor(size="12")]},
            "has the wrong shape at manifests.1.size: Input should be a valid integer",
        ),
        (
            wire.Index,
            {"schemaVersion": 2, "manifests": {}},
            "has the wrong shape at manifests: Input should be a valid array",
        ),
        (wire.Index, {"schemaVersion": 1, "manifests": []}, "has the wrong shape at schemaVersion: Input should be 2"),
        (
            wire.Index,
            {"schemaVersion": "2", "manifests": []},
            "has the wrong shape at schemaVersion: Input should be 2",
        ),
        (
            wire.Index,
            {"schemaVersion": True, "manifests": []},
            "has the wrong shape at schemaVersion: Input should be 2",
        ),
        (
            wire.Manifest,
            {"schemaVersion": 2, "config": "nope"},
            "has the wrong shape at config: Input should be an object",
        ),
        (
            wire.LabelledConfig,
            {"os": "linux", "architecture": "amd64", "config": {"Labels": {"a": "b", "c": 1}}},
            "has the wrong shape at config.Labels.c: Input should be a valid string",
        ),
        (
            wire.DockerConfig,
            {"auths": {"reg.example:5000": "alice:pw"}},
            "has the wrong shape at auths.reg.example:5000: Input should be an object",
        ),
        (
            wire.DockerConfig,
            {"credHelpers": {"reg.example": 5}},
            "has the wrong shape at credHelpers.reg.example: Input should be a valid string",
        ),
        (
            wire.DockerConfig,
            {"credsStore": "../../bin/sh"},
            "has the wrong shape at credsStore: Value error, should be a credential helper name like 'desktop' "
            "(for docker-credential-desktop)",
        ),
        (wire.DockerConfig, {"credsStore": ""}, "has the wrong shape at credsStore: Value error, should be a"),
    ],
)
def test_a_wrong_type_is_named_by_its_path(model: type, document: object, expected: str) -> None:
    assert fails(model, document).startswith(expected)


@pytest.mark.parametrize("size", [True, False, 1.0, 1e3, "1", None, [1]])
def test_a_size_is_an_int_and_never_a_bool_a_float_or_text(size: object) -> None:
    assert (
        fails(wire.Descriptor, descriptor(size=size)) == "has the wrong shape at size: Input should be a valid integer"
    )


def test_a_negative_size_is_refused_and_zero_is_not() -> None:
    expected = "has the wrong shape at size: Input should be greater than or equal to 0"
    assert fails(wire.Descriptor, descriptor(size=-1)) == expected
    assert wire.parse(wire.Descriptor, json.dumps(descriptor(size=0)).encode(), "x").size == 0


@pytest.mark.parametrize("digest", ["../../etc/passwd", "sha256", "sha256:", ":abc", "SHA256:ab", "sha256:a/b", ""])
def test_a_digest_must_look_like_one(digest: str) -> None:
    assert fails(wire.Descriptor, descriptor(digest=digest)) == (
        "has the wrong shape at digest: Value error, should be a digest like sha256:<64 hex digits>"
    )
    assert not wire.is_digest(digest)


def test_a_schema_version_of_2_0_is_2() -> None:
    index = wire.parse(wire.Index, b'{"schemaVersion": 2.0, "manifests": []}', "x")
    assert index.schema_version == 2 and type(index.schema_version) is int


def test_extra_keys_are_ignored_and_fields_may_be_given_by_name() -> None:
    document = {
        **descriptor(),
        "annotations": {"a": 1},
        "urls": 5,
        "platform": {"os": "linux", "architecture": "arm64", "os.version": []},
    }
    entry = wire.parse(wire.Descriptor, json.dumps(document).encode(), "x")
    assert entry == wire.Descriptor(
        media_type=OCI_MANIFEST, digest=DIGEST, size=12, platform=wire.Platform(os="linux", architecture="arm64")
    )
    # As pydantic's populate_by_name: the alias first, else the field's own name.
    both = wire.parse(wire.Envelope, b'{"media_type": 4, "mediaType": "a"}', "x")
    assert both.media_type == "a"
    assert wire.parse(wire.HelperAnswer, b'{"username": "u", "secret": "s"}', "x") == wire.HelperAnswer(
        username="u", secret="s"
    )
    assert (
        fails(wire.Envelope, {"media_type": 4}) == "has the wrong shape at media_type: Input should be a valid string"
    )


def test_missing_keys_are_each_a_problem_and_counted() -> None:
    assert fails(wire.Index, {}) == "has the wrong shape at schemaVersion: Field required (and 1 more problem)"
    assert fails(wire.Descriptor, {"size": 1}) == "has the wrong shape at digest: Field required"
    assert fails(wire.Descriptor, descriptor(platform={})) == (
        "has the wrong shape at platform.os: Field required (and 1 more problem)"
    )
    assert fails(wire.ImageConfig, {"os": "linux"}) == "has the wrong shape at architecture: Field required"
    assert fails(wire.HelperAnswer, {}) == "has the wrong shape at Username: Field required (and 1 more problem)"
    # Every problem counts, in the order of the fields, wherever it is.
    broken = {
        "auths": {"h": {"auth": 1, "username": [], "password": {}}},
        "credHelpers": {"a": "../x", "b": 5, "c": ""},
        "credsStore": "",
    }
    assert (
        fails(wire.DockerConfig, broken)
        == "has the wrong shape at auths.h.auth: Input should be a valid string (and 6 more problems)"
    )
    assert fails(wire.Descriptor, {"digest": 5, "size": 1, "platform": [], "mediaType": 3}) == (
        "has the wrong shape at mediaType: Input should be a valid string (and 2 more problems)"
    )


def test_none_is_allowed_exactly_where_the_shape_allows_it() -> None:
    config = wire.parse(wire.DockerConfig, b'{"auths": null, "credHelpers": null, "credsStore": null}', "x")
    assert config == wire.DockerConfig()
    labelled = wire.parse(wire.LabelledConfig, b'{"os": "l", "architecture": "a", "config": {"Labels": null}}', "x")
    assert labelled.labels == {}
    assert fails(wire.Index, {"schemaVersion": 2, "manifests": None}).endswith("Input should be a valid array")
    assert (
        fails(wire.DockerConfig, {"auths": {"h": None}}) == "has the wrong shape at auths.h: Input should be an object"
    )
    assert fails(wire.HelperAnswer, {"Username": None, "Secret": "s"}) == (
        "has the wrong shape at Username: Input should be a valid string"
    )


@pytest.mark.parametrize(
    "content",
    [b"", b" ", b"{not json", b"\xff", b"\xef\xbb\xbf{}", b"{} x", b"[" * 100_000, b'{"size": 1' + b"0" * 5000 + b"}"],
)
def test_what_is_not_json_says_so(content: bytes) -> None:
    assert fails(wire.Descriptor, content) == "is not JSON"


@pytest.mark.parametrize(
    ("model", "document"),
    [
        (wire.DockerConfig, {"auths": {"h": {"auth": [SECRET]}}}),
        (wire.DockerConfig, {"auths": {"h": {"username": "u", "password": {"p": SECRET}}}}),
        (wire.DockerConfig, {"credHelpers": {"h": f"../{SECRET}"}}),
        (wire.DockerConfig, {"credsStore": {"secret": SECRET}}),
        (wire.HelperAnswer, {"Username": "u", "Secret": [SECRET]}),
        (wire.TokenAnswer, {"token": {"t": SECRET}}),
        (wire.Descriptor, descriptor(digest=SECRET)),
        (wire.Descriptor, b'{"digest": "' + SECRET.encode() + b'", not json'),
    ],
)
def test_no_message_carries_the_value(model: type, document: object) -> None:
    text = fails(model, document)
    assert SECRET not in text and "hunter2" not in text


# What a registry really serves: Docker Hub's python:3.11-slim index (with BuildKit's
# attestation entries), one of its manifests, and its config, trimmed of layers and history.
INDEX = {
    "manifests": [
        {
            "annotations": {"com.docker.official-images.bashbrew.arch": "amd64"},
            "digest": "sha256:" + "1" * 64,
            "mediaType": OCI_MANIFEST,
            "platform": {"architecture": "amd64", "os": "linux"},
            "size": 1745,
        },
        {
            "digest": "sha256:" + "2" * 64,
            "mediaType": OCI_MANIFEST,
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            "size": 1745,
        },
        {
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            "digest": "sha256:" + "3" * 64,
            "mediaType": OCI_MANIFEST,
            "platform": {"architecture": "unknown", "os": "unknown"},
            "size": 840,
        },
    ],
    "mediaType": OCI_INDEX,
    "schemaVersion": 2,
}
CONFIG = {
    "architecture": "arm64",
    "variant": "v8",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin", "PYTHON_VERSION=3.11.9"],
        "Cmd": ["python3"],
        "Labels": {"org.opencontainers.image.version": "3.11", "flyte-images.identity": "abc"},
    },
    "created": "2024-06-01T00:00:00Z",
    "history": [{"created_by": 'CMD ["python3"]', "empty_layer": True}],
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "4" * 64]},
}
CONFIG_BYTES = json.dumps(CONFIG).encode()
MANIFEST = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {"mediaType": OCI_CONFIG, "digest": wire.sha256(CONFIG_BYTES), "size": len(CONFIG_BYTES)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": DIGEST, "size": 29126484}],
    "annotations": {"org.opencontainers.image.base.name": "debian:bookworm-slim"},
}


def test_a_real_index_manifest_and_config_round_trip() -> None:
    index = wire.parse(wire.Index, json.dumps(INDEX).encode(), "the index")
    assert wire.parse(wire.Envelope, json.dumps(INDEX).encode(), "x").media_type == OCI_INDEX
    assert index.schema_version == 2
    assert [str(m.platform) for m in index.manifests] == ["linux/amd64", "linux/arm64/v8", "unknown/unknown"]
    assert [m.size for m in index.manifests] == [1745, 1745, 840]
    for parsed, raw in zip(index.manifests, INDEX["manifests"], strict=True):  # type: ignore[call-overload]
        assert (parsed.digest, parsed.media_type) == (raw["digest"], raw["mediaType"])
        assert dataclasses.asdict(parsed.platform) == {"variant": None, **raw["platform"]}

    manifest = wire.parse(wire.Manifest, json.dumps(MANIFEST).encode(), "the manifest")
    assert manifest.config.media_type == OCI_CONFIG and manifest.config.size == len(CONFIG_BYTES)
    assert wire.matches(manifest.config.digest, CONFIG_BYTES)
    assert manifest.config.digest == "sha256:" + hashlib.sha256(CONFIG_BYTES).hexdigest()

    plain = wire.parse(wire.ImageConfig, CONFIG_BYTES, "the config")
    labelled = wire.parse(wire.LabelledConfig, CONFIG_BYTES, "the config")
    assert plain.platform == labelled.platform == "linux/arm64/v8"
    assert wire.normalize_platform(plain.platform) == "linux/arm64"
    assert labelled.labels == CONFIG["config"]["Labels"]  # type: ignore[index]
    assert isinstance(labelled, wire.ImageConfig)


def test_parsed_objects_are_frozen_and_keyword_only() -> None:
    platform = wire.Platform(os="linux", architecture="arm", variant="v7")
    assert str(platform) == "linux/arm/v7" and str(wire.Platform(os="linux", architecture="amd64")) == "linux/amd64"
    with pytest.raises(dataclasses.FrozenInstanceError):
        platform.os = "windows"  # type: ignore[misc]
    with pytest.raises(TypeError):
        wire.Platform("linux", "amd64")  # type: ignore[call-arg]


def test_token_answers_and_helper_answers() -> None:
    token = wire.parse(wire.TokenAnswer, b'{"access_token": "t", "expires_in": 300}', "x")
    assert (token.token, token.access_token) == (None, "t")
    answer = wire.parse(wire.HelperAnswer, b'{"ServerURL": "h", "Username": "u", "Secret": "s"}', "x")
    assert (answer.username, answer.secret) == ("u", "s")


def test_the_wire_shapes_do_not_load_pydantic() -> None:
    code = "import sys, flyte_images._registry; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_digest_helpers() -> None:
    content = b"hello"
    digest = wire.sha256(content)
    assert wire.is_digest(digest) and wire.matches(digest, content)
    assert not wire.matches(digest, b"other")
    assert not wire.matches("md5:" + hashlib.md5(content).hexdigest(), content)
