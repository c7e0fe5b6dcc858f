"""Build backends behind the protocol in `flyte_images.builders.base`: each declares what it can
do there, and imports only its siblings, the error tree, the config and the shared helpers."""
