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
ARG SSL_CERT_FILE=/run/secrets/flyte-images-ca REQUESTS_CA_BUNDLE=/run/secrets/flyte-images-ca PIP_CERT=/run/secrets/flyte-images-ca CURL_CA_BUNDLE=/run/secrets/flyte-images-ca
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked,id=flyte-images-apt-archives \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked,id=flyte-images-apt-lists \
    --mount=type=secret,id=flyte-images-ca,target=/run/secrets/flyte-images-ca \
    ["/bin/sh", "-c", "rm -f /etc/apt/apt.conf.d/docker-clean && apt-get update -q -o Acquire::https::CAInfo=/run/secrets/flyte-images-ca && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o Acquire::https::CAInfo=/run/secrets/flyte-images-ca build-essential ca-certificates"]
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked,id=flyte-images-apt-archives \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked,id=flyte-images-apt-lists \
    --mount=type=secret,id=flyte-images-ca,target=/run/secrets/flyte-images-ca \
    ["/bin/sh", "-c", "rm -f /etc/apt/apt.conf.d/docker-clean && apt-get update -q -o Acquire::https::CAInfo=/run/secrets/flyte-images-ca && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o Acquire::https::CAInfo=/run/secrets/flyte-images-ca curl"]
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv \
    --mount=type=bind,from=flyte-images-uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=secret,id=flyte-images-ca,target=/run/secrets/flyte-images-ca \
    ["/bin/sh", "-c", "uv pip install \"six\""]
RUN --mount=type=secret,id=flyte-images-ca,target=/run/secrets/flyte-images-ca \
    ["/bin/sh", "-c", "curl -fsS https://x"]
USER flyte
