FROM scratch AS flyte-images-uv
ARG TARGETARCH
COPY ["_fi/uv/${TARGETARCH}/uv", "/uv"]
FROM ghcr.io/flyteorg/flyte:py3.12-v2.12.1
ARG TARGETARCH
USER root
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv \
    --mount=type=bind,from=flyte-images-uv,source=/uv,target=/usr/local/bin/uv \
    ["/bin/sh", "-c", "uv pip install \"six\""]
USER flyte
