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
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv \
    --mount=type=cache,target=/root/.cache/pypoetry,id=flyte-images-poetry \
    --mount=type=bind,source=_fi/1,target=/tmp/flyte-images/1,rw \
    ["/bin/sh", "-c", "cd /tmp/flyte-images/1 && POETRY_VIRTUALENVS_CREATE=false UV_PYTHON_DOWNLOADS=never uv tool run --from poetry==2.2.1 poetry install --no-interaction --no-root"]
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv \
    --mount=type=bind,source=_fi/1p,target=/tmp/flyte-images/1p,rw \
    ["/bin/sh", "-c", "uv pip install --no-deps /tmp/flyte-images/1p"]
