"""build_images on a real engine and registry: six environments, three distinct images."""

from __future__ import annotations

import uuid

import pytest
from engine_support import BUSYBOX

import flyte_images
from flyte_images import Image, ImageCache, ImagesFailedError, TaskEnvironment
from flyte_images._registry import check_many

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


def test_six_environments_three_images_built_once_in_parallel_then_none(
    local_registry: str, capfd: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    flyte_images.init(image_registry=local_registry)
    run = uuid.uuid4().hex[:8]
    img_a = Image.from_base(BUSYBOX).clone(name="deploy-a").with_commands([f"echo a-{run} > /a"])
    img_b = Image.from_base(BUSYBOX).clone(name="deploy-b").with_commands([f"echo b-{run} > /b"])
    e1 = TaskEnvironment("e1", image=img_a)
    e2 = TaskEnvironment("e2", image=img_a)
    e3 = TaskEnvironment("e3", image=img_b, depends_on=[e1])
    e4 = TaskEnvironment("e4", image=img_b)
    e5 = TaskEnvironment("e5", image="auto")
    e6 = TaskEnvironment("e6", image="auto", depends_on=[e4, e5])
    capfd.readouterr()
    cache = flyte_images.build_images(e3, e2, e6, concurrency=3, force=False)
    log = capfd.readouterr().err
    assert sorted(cache.image_lookup) == ["e1", "e2", "e3", "e4", "e5", "e6"]
    uris = set(cache.image_lookup.values())
    assert len(uris) == 3
    assert cache.image_lookup["e1"] == cache.image_lookup["e2"] == img_a.uri
    assert cache.image_lookup["e3"] == cache.image_lookup["e4"] == img_b.uri
    # "auto" is flyte's published default image, used as is and never built (as in the SDK).
    published = Image.from_debian_base().uri
    assert cache.image_lookup["e5"] == cache.image_lookup["e6"] == published
    assert cache.status["e5"] == cache.status["e6"] == "reference"
    built = uris - {published}
    # The session's registry is new, so both other images are built, each exactly once.
    built_lines = [line for line in log.splitlines() if line.startswith("building ")]
    assert sorted(line.split()[1] for line in built_lines) == sorted(built)
    assert {cache.status[env] for env in ("e1", "e2", "e3", "e4")} == {"built"}
    # parallel: a second build started before the first one finished
    first_done = min(i for i, line in enumerate(log.splitlines()) if line.startswith("built "))
    starts = sorted(i for i, line in enumerate(log.splitlines()) if line.startswith("building "))
    assert starts[1] < first_done

    # Every uri in the cache is what the registry has, with the digest recorded.
    results = asyncio.run(check_many(sorted(built), ["linux/amd64"]))
    found = {r.reference: r.digest for r in results if r.exists}
    assert set(found) == built
    for env, uri in cache.image_lookup.items():
        if cache.status[env] == "built":
            assert cache.digests[env] == found[uri]

    again = flyte_images.build_images(e3, e2, e6)
    assert not [line for line in capfd.readouterr().err.splitlines() if line.startswith("building ")]
    assert set(again.status.values()) == {"exists", "reference"} and again.image_lookup == cache.image_lookup

    assert ImageCache.from_json(cache.to_json()) == cache
    assert ImageCache.from_transport(cache.to_transport) == cache
    assert cache.to_transport == ImageCache.from_json(cache.to_json()).to_transport


def test_one_failure_keeps_the_others_results(local_registry: str) -> None:
    flyte_images.init(image_registry=local_registry)
    run = uuid.uuid4().hex[:8]
    good = TaskEnvironment(
        "good", image=Image.from_base(BUSYBOX).clone(name="deploy-good").with_commands([f"echo {run}"])
    )
    bad = TaskEnvironment(
        "bad", image=Image.from_base(BUSYBOX).clone(name="deploy-bad").with_commands([f"exit 7 # {run}"])
    )
    with pytest.raises(ImagesFailedError) as info:
        flyte_images.build_images(good, bad, quiet=True)
    cache = info.value.cache
    assert cache.status == {"good": "built", "bad": "failed"}
    assert "exit code 7" in cache.reasons["bad"]
    assert "bad (" in str(info.value) and "deploy-bad" in str(info.value)
    assert cache.image_lookup["good"].startswith(f"{local_registry}/deploy-good:")


def test_explain_names_the_edited_file_and_only_its_layer(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from flyte_images._cli import main

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(f"print('{uuid.uuid4()}')\n")
    (tmp_path / "src" / "util.py").write_text("x = 1\n")
    (tmp_path / "images.py").write_text(
        "from pathlib import Path\nfrom flyte_images import Image\nhere = Path(__file__).parent\n"
        f"app = (Image.from_base({BUSYBOX!r}).clone(name='explain-test').with_commands(['echo hi'])\n"
        "       .with_source_folder(here / 'src', dst='/srv').with_env_vars({'A': '1'}))\n"
    )
    target = str(tmp_path / "images.py")
    assert main(["build", target, "-q"]) == 0
    capsys.readouterr()
    assert main(["explain", target, "--json"]) == 0
    (same,) = json.loads(capsys.readouterr().out)["images"]
    assert same["built"] and same["previous_uri"] is None  # built once: nothing earlier to compare

    (tmp_path / "src" / "app.py").write_text("print('edited')\n")
    assert main(["explain", target, "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["images"]
    assert not report["built"]  # the edit is not built yet; compared with the last build
    changed = [p for p in report["parts"] if p["status"] != "unchanged"]
    assert [p["part"] for p in changed] == ["2 source_folder"]
    (change,) = changed[0]["changes"]
    assert change.startswith("src/app.py changed: sha ")
    assert report["uri"] != report["previous_uri"]
    assert main(["explain", target]) == 0
    text = capsys.readouterr().out
    assert "CHANGED" in text and "src/app.py changed" in text and "not built yet; changed since" in text
