"""Blob uploads from chunks: a blob too big to hold is sent from a source read a chunk at a time
(off the event loop), stored under its digest by a real registry (Debian's docker-registry on
loopback); a source that changes while it is sent stores nothing; a request sent again (a
redirect) reads the source again from its start. The redirecting registry is a loopback fake: no
real registry can be made to redirect an upload on demand."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator

import httpx
import pytest
from engine_support import registry
from registry_support import FakeServer, reply, sha256

from flyte_images import RegistryError
from flyte_images._registry import Reference, Registry

MIB = 1 << 20


class Source:
    """A blob as chunks of `chunk` bytes (the last one shorter); it says it holds `size` bytes
    (`data`'s length unless told otherwise) and records each reading and the thread of each chunk."""

    def __init__(self, data: bytes, chunk: int = MIB, size: int | None = None) -> None:
        self.data, self.chunk = data, chunk
        self.size = len(data) if size is None else size
        self.readings = 0
        self.threads: set[int] = set()

    def chunks(self) -> Iterator[bytes]:
        self.readings += 1
        for start in range(0, len(self.data), self.chunk):
            self.threads.add(threading.get_ident())
            yield self.data[start : start + self.chunk]


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    with registry() as running:
        yield running.host


def push(host: str, body: bytes | Source, digest: str) -> tuple[bool, int]:
    """Upload `body` as `digest` of host/team/big; whether it was sent, and the event loop's thread."""

    async def run() -> tuple[bool, int]:
        async with Registry() as reg:
            return await reg.push_blob(Reference(host, "team/big", "v1"), body, digest), threading.get_ident()

    return asyncio.run(run())


def stored(host: str, digest: str) -> bytes | None:
    answer = httpx.get(f"http://{host}/v2/team/big/blobs/{digest}", follow_redirects=True)
    return answer.content if answer.status_code == 200 else None


def test_a_blob_from_chunks_is_stored_under_its_digest(host: str) -> None:
    data = os.urandom(20 * MIB + 12345)
    source = Source(data)
    sent, loop_thread = push(host, source, sha256(data))
    assert sent and source.readings == 1
    assert stored(host, sha256(data)) == data  # the registry checked it against its digest
    assert loop_thread not in source.threads  # the event loop never waited for a chunk to be read
    again = Source(data)
    assert push(host, again, sha256(data))[0] is False and again.readings == 0  # there: not read at all


@pytest.mark.parametrize("said", [-1, +1], ids=["fewer", "more"])
def test_a_source_that_changes_while_it_is_sent_stores_nothing(host: str, said: int) -> None:
    data = os.urandom(3 * MIB + 7)
    source = Source(data, size=len(data) + said * 10)
    with pytest.raises(RegistryError, match="changed while it was sent: build again") as raised:
        push(host, source, sha256(data))
    assert f"of the {source.size} bytes it was said to hold" in str(raised.value)
    assert stored(host, sha256(data)) is None


def test_an_upload_sent_again_reads_its_source_from_the_start() -> None:
    """A fake registry that redirects the first PUT of an upload (having read its body) to
    another address of its own, and stores the second if its body matches the digest."""
    bodies: list[bytes] = []

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.command == "HEAD":
            reply(handler, 404)  # no such blob yet
            return
        if handler.command == "POST":
            reply(handler, 202, headers={"Location": "/v2/team/big/blobs/uploads/first"})
            return
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        bodies.append(body)
        if "/first" in handler.path:
            digest = handler.path.partition("digest=")[2]
            reply(handler, 307, headers={"Location": f"/v2/team/big/blobs/uploads/second?digest={digest}"})
        else:
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            reply(handler, 201 if handler.path.endswith(digest.replace(":", "%3A")) else 400)

    data = os.urandom(2 * MIB + 99)
    source = Source(data, chunk=300_000)
    with FakeServer(answer) as fake:
        assert push(fake.host, source, sha256(data))[0] is True
        assert sorted(seen.method for seen in fake.seen) == ["HEAD", "POST", "PUT", "PUT"]
    assert source.readings == 2 and bodies == [data, data]
