FROM python:3.11-slim-bookworm
ARG TARGETARCH
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PYTHONUNBUFFERED=1
COPY ["_fi/uv/${TARGETARCH}/uv", "/usr/local/bin/uv"]
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv uv venv --python 3.11 /opt/venv
WORKDIR /root
COPY ["_fi/1/", "/etc/app/"]
