"""Testing with flyte-images, no engine needed: `FakeBuilder`, an in-memory backend that executes
nothing (`fake.py` says what it interprets), e.g. `flyte_images.build(image, builder=fake,
push=False)`, then `fake.store[image.uri].files["/app/main.py"]` is what the build received.
`flyte_images.testing.conformance` is the suite every backend passes (it imports pytest).
"""

from .fake import FakeBuilder, FakeImage

__all__ = ["FakeBuilder", "FakeImage"]
