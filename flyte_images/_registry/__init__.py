"""A small OCI distribution client: does this image exist in its registry, with these platforms?
And, for engines that build one platform at a time, `push_index`: one image from several."""

from .client import Existence, RegistryClient, check_many, parse_reference
from .index import platform_reference, push_index

__all__ = ["Existence", "RegistryClient", "check_many", "parse_reference", "platform_reference", "push_index"]
