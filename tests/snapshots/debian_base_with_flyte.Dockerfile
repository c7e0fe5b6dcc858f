FROM ghcr.io/flyteorg/flyte:py3.12-v2.12.1
ARG TARGETARCH
USER root
COPY ["_fi/uv/${TARGETARCH}/uv", "/usr/local/bin/uv"]
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv \
    ["/bin/sh", "-c", "uv pip install \"six\""]
USER flyte
