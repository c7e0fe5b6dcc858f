"""A small OCI distribution client: does this image exist in its registry, with these platforms?"""

from .client import Existence, RegistryClient, check_many, parse_reference

__all__ = ["Existence", "RegistryClient", "check_many", "parse_reference"]
