"""Build backends. Each backend implements the small protocol in `flyte_images.builders.base`."""
