FROM scratch AS flyte-images-uv
ARG TARGETARCH
COPY ["_fi/uv/${TARGETARCH}/uv", "/uv"]
FROM python:3.11-slim-bookworm
ARG TARGETARCH
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked,id=flyte-images-apt-archives \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked,id=flyte-images-apt-lists \
    ["/bin/sh", "-c", "rm -f /etc/apt/apt.conf.d/docker-clean && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends jq"]
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv \
    --mount=type=bind,from=flyte-images-uv,source=/uv,target=/usr/local/bin/uv \
    ["/bin/sh", "-c", "UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never uv pip install --system --break-system-packages \"six\""]
