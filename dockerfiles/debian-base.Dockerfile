# The environment of Image.from_debian_base: uv, and a virtual environment of the requested
# Python on PATH. Rendered by flyte_images._render; {placeholders} are filled in there.
# Its bytes are part of every such image's identifier.
FROM {base_image}
ARG TARGETARCH
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PYTHONUNBUFFERED=1
COPY ["_fi/uv/${TARGETARCH}/uv", "/usr/local/bin/uv"]
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv uv venv --python {python_version} /opt/venv
WORKDIR /root
