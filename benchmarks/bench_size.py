"""Image size: what flyte-images adds over an expert's hand-written Dockerfile for the same image.

Three images on the Debian base (`from_debian_base`, no flyte): pip packages, a uv project with
install_project, and a 300-file source folder. Each is built twice on the local engine: with
flyte-images, and from a hand-written Dockerfile of the same layout (the same base, virtual
environment, `flyte` user, apt packages and Python packages) as an expert writes it: uv
bind-mounted from the build context for the steps that run it (the same pinned uv binary), apt's
archives and lists removed, uv's cache in a cache mount. Sizes are `docker image inspect -f '{{.Size}}'`;
the goal is ours <= 1 MB larger for each. A last row, outside the goal, shows what keeping uv
in the image (`with_uv()`) costs: the pip image with it, against the same hand-written one.

Needs the engine (fixtures/engine/setup.sh) and the package index; behind a TLS-inspecting
proxy, the host's CA bundle (FLYTE_IMAGES_CA_BUNDLE, default /etc/ssl/certs/ca-certificates.crt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import flyte_images
from flyte_images import Image
from flyte_images._files.uvbin import uv_binary

ROOT = Path(__file__).resolve().parent.parent
UVPROJ = ROOT / "fixtures" / "projects" / "uvproj"
CA = os.environ.get("FLYTE_IMAGES_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
PACKAGES = ("six==1.16.0", "idna==3.7")
GOAL = 1_000_000  # bytes

# The hand-written environment: the layout of from_debian_base, written as an expert would.
# The CA bundle is a build secret (as ours), named by the variables uv and apt read.
UV = "--mount=type=bind,source=uv,target=/usr/local/bin/uv --mount=type=cache,target=/root/.cache/uv"
CA_MOUNT = "--mount=type=secret,id=ca,target=/run/secrets/ca"
HAND_BASE = f"""\
FROM python:3.11-slim-bookworm
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONPATH=/root PYTHONUNBUFFERED=1 \\
    UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN {UV} uv venv --python 3.11 /opt/venv
RUN useradd --create-home --shell /bin/bash flyte
WORKDIR /home/flyte
RUN {CA_MOUNT} apt-get update -q -o Acquire::https::CAInfo=/run/secrets/ca \\
    && apt-get install -y -q --no-install-recommends -o Acquire::https::CAInfo=/run/secrets/ca \\
       build-essential ca-certificates \\
    && apt-get clean && rm -rf /var/lib/apt/lists/*
"""
HAND = {
    "pip packages": f"RUN {UV} {CA_MOUNT} SSL_CERT_FILE=/run/secrets/ca uv pip install {' '.join(PACKAGES)}\n",
    "uv project (install_project)": (
        f"RUN {UV} {CA_MOUNT} --mount=type=bind,source=uvproj,target=/tmp/uvproj,rw \\\n"
        "    cd /tmp/uvproj && SSL_CERT_FILE=/run/secrets/ca uv sync --frozen --no-editable --active\n"
    ),
    "source folder (300 files)": "COPY --chown=flyte:flyte src /app/src\n",
}


def run(*command: str) -> str:
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def source_tree(src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    for i in range(300):
        (src / f"m{i:03d}.py").write_text(f"VALUE = {i}\n" * 20)


def ours(kind: str, src: Path) -> Image:
    image = Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="bench-size")
    if kind == "pip packages":
        return image.with_pip_packages(*PACKAGES)
    if kind == "uv project (install_project)":
        return image.with_uv_project(UVPROJ / "pyproject.toml", project_install_mode="install_project")
    return image.with_source_folder(src, dst="/app")


def hand(kind: str, context: Path) -> str:
    """Build the hand-written image of `kind` from `context`; its reference."""
    (context / "Dockerfile").write_text(HAND_BASE + HAND[kind] + "USER flyte\n")
    tag = f"bench-size-hand:{uuid.uuid4().hex[:8]}"
    run("docker", "buildx", "build", "--load", "-q", "-t", tag, "--secret", f"id=ca,src={CA}", str(context))
    return tag


def size(reference: str) -> int:
    return int(run("docker", "image", "inspect", "-f", "{{.Size}}", reference).strip())


def main() -> None:
    os.environ.setdefault("FLYTE_IMAGES_CA_BUNDLE", CA)
    work = Path(tempfile.mkdtemp(prefix="fi-bench-size-"))
    context = work / "hand"
    source_tree(context / "src")
    shutil.copytree(UVPROJ, context / "uvproj", ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    binary = uv_binary("linux/amd64")  # the pinned uv flyte-images builds with
    try:
        os.link(binary, context / "uv")
    except OSError:
        shutil.copy2(binary, context / "uv")
    rows = []
    for kind in HAND:
        built = flyte_images.build(ours(kind, context / "src"), quiet=True)
        rows.append((kind, size(built.uri), size(hand(kind, context))))
    kept = flyte_images.build(ours("pip packages", context / "src").with_uv(), quiet=True)
    print("image size (bytes, `docker image inspect`; Debian base, python 3.11, linux/amd64)")
    print(f"{'image':<30} {'flyte-images':>14} {'hand-written':>14} {'difference':>12}")
    for kind, mine, theirs in rows:
        print(f"{kind:<30} {mine:>14,} {theirs:>14,} {mine - theirs:>+12,}")
    met = all(mine - theirs <= GOAL for _kind, mine, theirs in rows)
    mine, theirs = size(kept.uri), rows[0][2]
    print(f"{'pip packages, with_uv()':<30} {mine:>14,} {theirs:>14,} {mine - theirs:>+12,}")
    print(f"goal: ours <= 1 MB larger than hand-written for the first three ({'met' if met else 'MISSED'})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
