FROM scratch AS flyte-images-uv
ARG TARGETARCH
COPY ["_fi/uv/${TARGETARCH}/uv", "/uv"]
FROM python:3.11-slim-bookworm
ARG TARGETARCH
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/root \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PYTHONUNBUFFERED=1
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv \
    --mount=type=bind,from=flyte-images-uv,source=/uv,target=/usr/local/bin/uv \
    uv venv --python 3.11 /opt/venv
RUN if ! id -u flyte >/dev/null 2>&1; then useradd --create-home --shell /bin/bash flyte; fi \
    && mkdir -p /home/flyte && chown -R flyte:flyte /home/flyte /root
WORKDIR /home/flyte
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked,id=flyte-images-apt-archives \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked,id=flyte-images-apt-lists \
    ["/bin/sh", "-c", "rm -f /etc/apt/apt.conf.d/docker-clean && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends build-essential ca-certificates"]
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv \
    --mount=type=bind,from=flyte-images-uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=bind,source=_fi/1,target=/tmp/flyte-images/1 \
    --mount=type=tmpfs,target=/tmp/flyte-images/scratch \
    ["/bin/sh", "-c", "cd /tmp/flyte-images/1 && uv export --frozen --no-emit-project --format requirements-txt --output-file /tmp/flyte-images/scratch/requirements.txt && uv pip install -r /tmp/flyte-images/scratch/requirements.txt"]
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv \
    --mount=type=bind,from=flyte-images-uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=bind,source=_fi/1p,target=/tmp/flyte-images/1p,rw \
    ["/bin/sh", "-c", "uv pip install --no-deps /tmp/flyte-images/1p"]
USER flyte
