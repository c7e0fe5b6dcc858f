"""`ImageCache`: what a deploy needs to know of its images, and its JSON and transport forms."""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import asdict, dataclass, field


@dataclass
class ImageCache:
    """What a deploy needs: the image uri of every environment, and how each came about."""

    image_lookup: dict[str, str] = field(default_factory=dict)
    identifiers: dict[str, str | None] = field(default_factory=dict)
    digests: dict[str, str | None] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)  # built | exists | reference | planned | failed
    reasons: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """Stable JSON: keys sorted, so the same results give the same bytes."""
        return json.dumps(asdict(self), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ImageCache:
        data = json.loads(text)
        return cls(
            **{k: dict(data.get(k, {})) for k in ("image_lookup", "identifiers", "digests", "status", "reasons")}
        )

    def to_transport(self) -> str:
        """gzip (mtime 0, so deterministic) + base64 of the JSON, as the SDK passes it along."""
        return base64.b64encode(gzip.compress(self.to_json().encode(), mtime=0)).decode()

    @classmethod
    def from_transport(cls, text: str) -> ImageCache:
        return cls.from_json(gzip.decompress(base64.b64decode(text)).decode())
