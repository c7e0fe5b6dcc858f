"""A small OCI distribution client, `Registry`: does this image exist in its registry, with these
platforms? Read an image's parts and write new ones; and, for engines that build one platform at
a time, write one image from several (`push_index`)."""

from .checks import Existence
from .index import platform_reference
from .reference import Reference, parse_reference
from .registry import Registry, check_many, push_index

__all__ = [
    "Existence",
    "Reference",
    "Registry",
    "check_many",
    "parse_reference",
    "platform_reference",
    "push_index",
]
