"""The CA bundle in a build: its variables declared once (an ARG, never in the image's config),
the bundle mounted as a secret into the layers' RUN steps, and no RUN title that starts with a
preamble. The rendering without a bundle, and every identifier, are unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flyte_images import Image
from flyte_images._build.options import BuildOptions
from flyte_images._build.route import build_image
from flyte_images._formats.dockerfile import CA_SECRET_ID, RenderOptions
from flyte_images._plan.plan import plan
from flyte_images.builders.base import ProgressEvent
from flyte_images.testing import FakeBuilder

CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE")
CA_PATH = f"/run/secrets/{CA_SECRET_ID}"
CA_MOUNT = f"--mount=type=secret,id={CA_SECRET_ID},target={CA_PATH}"


def _image() -> Image:
    return (
        Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="fi-ca")
        .with_apt_packages("curl")
        .with_pip_packages("six")
        .with_env_vars({"MODE": "x"})
        .with_commands(["curl -fsS https://example.org", "echo done"])
    )


def _instructions(image: Image, ca_bundle: bool) -> list[str]:
    return list(plan(image, RenderOptions(ca_bundle=ca_bundle)).instructions)


def test_the_ca_variables_are_declared_once_and_no_run_step_repeats_them() -> None:
    instructions = _instructions(_image(), ca_bundle=True)
    declared = [i for i, text in enumerate(instructions) if any(name in text for name in CA_VARIABLES)]
    assert len(declared) == 1
    (arg,) = (instructions[i] for i in declared)
    assert arg == "ARG " + " ".join(f"{name}={CA_PATH}" for name in CA_VARIABLES)
    runs_after = [text for text in instructions[declared[0] :] if text.startswith("RUN")]
    assert len(runs_after) == 5  # build-essential, curl, six, and the two commands
    assert all(CA_MOUNT in text for text in runs_after)  # each sees the variables: the file is there


def test_a_ca_bundle_adds_only_the_declaration_and_the_mounts() -> None:
    with_ca = _instructions(_image(), ca_bundle=True)
    without = _instructions(_image(), ca_bundle=False)
    # apt reads no CA variable: its steps name the bundle as an option.
    added = re.compile(
        rf"(?<=RUN ){re.escape(CA_MOUNT)} \\\n +| \\\n +{re.escape(CA_MOUNT)}| -o Acquire::https::CAInfo={CA_PATH}"
    )
    assert [added.sub("", text) for text in with_ca if not text.startswith("ARG SSL_CERT")] == without


def test_the_identifier_does_not_depend_on_the_ca_bundle() -> None:
    assert plan(_image(), RenderOptions(ca_bundle=True)).uri == plan(_image(), RenderOptions()).uri


def test_the_steps_see_the_variables_and_the_image_does_not(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n")
    image = Image.from_base("flyte-images/busybox:test").clone(name="fi-ca").with_commands(["echo $SSL_CERT_FILE"])
    fake, seen = FakeBuilder(), []
    build_image(image, BuildOptions.of(builder=fake, ca_bundle=bundle), progress=seen.append)
    assert any(e.kind == "log" and e.text.strip() == CA_PATH for e in seen)
    (built,) = fake.store.values()
    assert not set(CA_VARIABLES) & set(built.env)


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_download_through_the_mounted_bundle_and_nothing_of_it_in_the_image() -> None:
    from engine_support import BASE_IMAGE, ca_bundle, docker, remove_image, run_in

    bundle = ca_bundle()
    if bundle is None:
        import certifi

        bundle = certifi.where()
    show = 'printf "%s\\n" "$SSL_CERT_FILE" "$REQUESTS_CA_BUNDLE" "$PIP_CERT" "$CURL_CA_BUNDLE" > /ca-env'
    # Python's TLS reads SSL_CERT_FILE: the download trusts the mounted bundle.
    fetch = "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/six/', timeout=60).read(1)"
    script = f'{show} && test -s "$SSL_CERT_FILE" && python3 -c "{fetch}"'
    image = Image.from_base(BASE_IMAGE).clone(name="fi-test-ca-lines").with_commands([script])
    events: list[ProgressEvent] = []
    try:
        result = build_image(image, BuildOptions.of(force=True, quiet=True, ca_bundle=bundle), progress=events.append)
        assert result.built
        titles = [e.step for e in events if e.kind == "step" and " RUN " in f" {e.step}"]
        assert titles and not any(name in title for title in titles for name in CA_VARIABLES)
        assert run_in(result.uri, "cat /ca-env").split() == [CA_PATH] * 4
        assert run_in(result.uri, f"test ! -e {CA_PATH} && echo gone").strip() == "gone"
        config = json.loads(docker("image", "inspect", result.uri).stdout)[0]["Config"]
        assert not [item for item in config["Env"] or [] if item.split("=", 1)[0] in CA_VARIABLES]
    finally:
        remove_image(image.uri)
