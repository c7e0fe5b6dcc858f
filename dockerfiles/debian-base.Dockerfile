# The environment of Image.from_debian_base when it is built (install_flyte=False, or a flyte
# version without a published image), laid out as the Flyte SDK's default image: a virtual
# environment of the requested Python on PATH, PYTHONPATH=/root, and the non-root `flyte` user
# whose home is the working folder. uv makes the environment but is not left in the image: its
# step mounts the pinned binary from the stage the renderer puts first. After it come
# `build-essential` and `ca-certificates` (an apt step like `with_apt_packages`), the layers
# (run as root), and a last `USER flyte`.
# Rendered by flyte_images._formats.dockerfile; {placeholders} are filled in there.
# Its bytes are part of every such image's identifier.
FROM {base_image}
ARG TARGETARCH
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/root \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PYTHONUNBUFFERED=1
RUN --mount=type=cache,target=/root/.cache/uv,id=flyte-images-uv \
    {uv} \
    uv venv --python {python_version} /opt/venv
RUN if ! id -u flyte >/dev/null 2>&1; then useradd --create-home --shell /bin/bash flyte; fi \
    && mkdir -p /home/flyte && chown -R flyte:flyte /home/flyte /root
WORKDIR /home/flyte
