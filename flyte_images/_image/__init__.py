"""The model: an Image is a base and a chain of frozen layer values; environments name images.

image, packages, args   Image and its `with_*` methods, the defaults they fill in
identity                what the identifier covers (`identify`: one read of the files), its uri
layers/                 one frozen value per layer kind: what it reads, hashes, renders
secret                  secrets as values (never their contents); argument checks: _formats.validation
environment, policies, resources   TaskEnvironment and the values it carries
uvscript                a uv script's header, read for from_uv_script
"""
