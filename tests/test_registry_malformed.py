"""Answers that cannot be trusted are "unknown" with a reason, one image at a time.

A fake registry (no real one serves broken documents) answers each tag of `bad/app` with one
kind of malformed answer: HTML with status 200, non-JSON, JSON of the wrong shape, an index
whose entries lack platforms, config blobs that are not objects or do not match their digest,
oversized bodies, a garbled Retry-After. Another fake speaks no HTTP at all. All of them are
asked in ONE check_many call together with an image in a real registry (Debian's
docker-registry) on loopback, which must still come back "exists". Docker's config.json of the
wrong shape is tried against a real basic-auth registry.
"""

from __future__ import annotations

import asyncio
import http.server
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_support import (
    INDEX_TYPE,
    MANIFEST_TYPE,
    PASSWORD,
    USER,
    FakeServer,
    Seeded,
    basic_registry,
    reply,
    seed_image,
    seeded_registry,
    sha256,
)

from flyte_images._cli import main
from flyte_images._registry import Existence, check_many
from flyte_images._registry.record import PlatformCache

AMD64 = {"os": "linux", "architecture": "amd64"}
CONFIG = json.dumps({"os": "linux", "architecture": "amd64"}).encode()


def check(refs: list[str], platforms: list[str] | None = None, **kw: object) -> list[Existence]:
    return asyncio.run(check_many(refs, platforms, platform_cache=PlatformCache(None), **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def real() -> Iterator[Seeded]:
    with seeded_registry() as seeded:
        yield seeded


def manifest(blob: bytes = CONFIG, **fields: object) -> bytes:
    descriptor = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(blob)}
    return json.dumps(
        {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": {**descriptor, "size": 1}, **fields}
    ).encode()


def index(*entries: dict[str, object]) -> bytes:
    manifests = [{"mediaType": MANIFEST_TYPE, "digest": sha256(b"x"), "size": 1, **e} for e in entries]
    return json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}).encode()


Route = tuple[int, bytes, dict[str, str]]
M = {"Content-Type": MANIFEST_TYPE}
HTML = (200, b"<html><body>Sign in</body></html>", {"Content-Type": "text/html; charset=utf-8"})

# tag -> (answer, the reason must contain this)
CASES: dict[str, tuple[Route, str]] = {
    "html": (HTML, "Content-Type 'text/html', not an image manifest"),
    "no-type": ((200, manifest(), {}), "Content-Type 'none'"),
    "not-json": ((200, b"{not json", M), "the manifest of {host}/bad/app:not-json is not JSON"),
    "a-list": ((200, b"[1, 2]", M), "wrong shape at the top level: Input should be an object"),
    "config-text": ((200, manifest(config="nope"), M), "wrong shape at config: Input should be an object"),
    "schema-1": ((200, manifest(schemaVersion=1), M), "wrong shape at schemaVersion"),
    "bad-size": ((200, index({"size": "12", "platform": AMD64}), {"Content-Type": INDEX_TYPE}), "manifests.0.size"),
    "no-platforms": ((200, index({}, {}), {"Content-Type": INDEX_TYPE}), "2 entries without a platform"),
    "bad-platform": (
        (200, index({"platform": {"os": 5, "architecture": "amd64"}}), {"Content-Type": INDEX_TYPE}),
        "manifests.0.platform.os: Input should be a valid string",
    ),
    "odd-media": ((200, manifest(mediaType="text/plain"), M), "says its mediaType is 'text/plain'"),
    "traversal": (
        (200, manifest().replace(b"sha256:", b"../../"), M),
        "wrong shape at config.digest: Value error, should be a digest like sha256:",
    ),
    "config-list": ((200, manifest(b"[1, 2]"), M), "the config blob of {host}/bad/app:config-list has the"),
    "config-no-arch": ((200, manifest(b'{"os": "linux"}'), M), "architecture: Field required"),
    "config-lie": ((200, manifest(b'{"os": "linux", "architecture": "lie"}'), M), "does not match its digest"),
    "digest-lie": ((200, manifest(), {**M, "Docker-Content-Digest": sha256(b"other")}), "does not match its digest"),
    "digest-junk": ((200, manifest(), {**M, "Docker-Content-Digest": "junk"}), "that is not a digest"),
    "huge": ((200, b" " * (5 * 1024 * 1024), M), "answered more than 4096 KiB"),
    "busy": ((503, b"", {"Retry-After": "when pigs fly"}), "answered 503"),
}
BLOBS = {
    sha256(b"[1, 2]"): b"[1, 2]",
    sha256(b'{"os": "linux"}'): b'{"os": "linux"}',
    sha256(b'{"os": "linux", "architecture": "lie"}'): CONFIG,  # serves other bytes than its digest
    sha256(CONFIG): CONFIG,
}


def broken_registry() -> FakeServer:
    """A fake registry answering each tag of bad/app with one of CASES, blobs from BLOBS."""

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        kind, _, name = handler.path.rpartition("/")
        if kind.endswith("/manifests") and name in CASES:
            reply(handler, *CASES[name][0])
        elif kind.endswith("/blobs") and name in BLOBS:
            reply(handler, 200, BLOBS[name], {"Content-Type": "application/octet-stream"})
        else:
            reply(handler, 404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}', {"Content-Type": "application/json"})

    return FakeServer(answer)


def no_http() -> FakeServer:
    """A fake that answers with bytes that are not HTTP."""
    return FakeServer(lambda handler: handler.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff garbage\r\n\r\n"))


def test_every_malformed_answer_is_its_own_unknown_and_the_rest_still_answer(real: Seeded) -> None:
    with broken_registry() as bad, no_http() as garbage:
        refs = [f"{bad.host}/bad/app:{tag}" for tag in CASES]
        results = check([*refs, f"{garbage.host}/x/y:1", real.reference], ["linux/amd64"], backoff=0.01)
    *broken, spoken, fine = results
    assert fine.state == "exists" and fine.digest == real.digest
    assert spoken.state == "unknown" and "could not be reached: the answer is not HTTP/1.1" in spoken.reason
    assert "SSH" not in spoken.reason
    for (tag, (_route, expected)), result in zip(CASES.items(), broken, strict=True):
        assert result.state == "unknown", (tag, result)
        assert expected.format(host=bad.host) in result.reason, (tag, result.reason)
        assert "\n" not in result.reason


def test_html_on_the_head_path_is_not_exists(real: Seeded) -> None:
    with broken_registry() as bad:
        page, fine = check([f"{bad.host}/bad/app:html", real.reference])  # no platforms: HEAD
    assert page.state == "unknown" and "'text/html'" in page.reason
    assert fine.state == "exists"


def test_an_index_with_some_unlabelled_entries_still_answers_for_what_it_names() -> None:
    body = index({"platform": AMD64}, {})
    with FakeServer(lambda h: reply(h, 200, body, {"Content-Type": INDEX_TYPE})) as partial:
        (named,) = check([f"{partial.host}/p/app:1"], ["linux/amd64"])
        (unsure,) = check([f"{partial.host}/p/app:1"], ["linux/arm64"])
    assert named.state == "exists" and named.platforms == ("linux/amd64",)
    assert unsure.state == "unknown" and "cannot tell whether it has linux/arm64" in unsure.reason


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"auths": []}, "has the wrong shape at auths: Input should be an object"),
        ({"auths": {"{host}": "alice:pw"}}, "at auths.{host}: Input should be an object"),
        ({"auths": {"{host}": {"auth": "%%%"}}}, "an auth value for {host} that is not base64 of user:password"),
        ({"credHelpers": {"{host}": 5}}, "at credHelpers.{host}: Input should be a valid string"),
        ({"credsStore": "../../bin/sh"}, "at credsStore: Value error, should be a credential helper name"),
        ([], "at the top level"),
        ("{", "is not JSON"),
    ],
)
def test_a_docker_config_of_the_wrong_shape_is_unknown_for_that_registry_only(
    config: object, expected: str, real: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with basic_registry() as reg:
        private = seed_image(reg.host, "team/app", "v1", auth=(USER, PASSWORD))
        text = config if isinstance(config, str) else json.dumps(config).replace("{host}", reg.host)
        (tmp_path / "config.json").write_text(text)
        locked, fine = check([private.reference, real.reference])
    assert fine.state == "exists"
    assert locked.state == "unknown" and f"Docker's config {tmp_path / 'config.json'}" in locked.reason
    assert expected.replace("{host}", reg.host) in locked.reason
    assert "fix the file" in locked.reason or "docker login" in locked.reason


def test_cli_exists_says_cannot_tell_in_one_line_per_image(
    real: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with broken_registry() as bad, no_http() as garbage:
        refs = [f"{bad.host}/bad/app:{tag}" for tag in ("html", "not-json", "config-text", "no-platforms")]
        refs += [f"{garbage.host}/x/y:1", "Not A Reference", real.reference]
        assert main(["exists", *refs, "--platform", "linux/amd64"]) == 2
        out, err = capsys.readouterr()
        lines = out.splitlines()
        assert len(lines) == len(refs) and "Traceback" not in out + err
        assert [line.split()[0] for line in lines] == ["unknown"] * (len(refs) - 1) + ["exists"]
        assert main(["exists", f"{bad.host}/bad/app:config-text", "--platform", "linux/amd64", "--json"]) == 2
        (row,) = json.loads(capsys.readouterr().out)["images"]
        assert row["state"] == "unknown" and "wrong shape at config" in row["reason"]
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text('{"auths": []}')
    with basic_registry() as reg:
        assert main(["exists", f"{reg.host}/team/app:v1"]) == 2
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith("unknown") and "Docker's config" in out and "Traceback" not in err
