"""Testing with flyte-images: an in-memory FAKE backend, and the suite every backend passes.

    from flyte_images.testing import FakeBuilder
    fake = FakeBuilder()
    flyte_images.build(image, builder=fake, push=False)
    fake.store[image.uri].files["/app/main.py"]       # what the build received, byte for byte

`FakeBuilder` executes nothing and needs no engine (`fake.py` says what it interprets).
`flyte_images.testing.conformance` is the conformance suite, for pytest (which only that module
imports): a backend's test module subclasses `BackendConformance` and gives it the backend.
"""

from .fake import FakeBuilder, FakeImage

__all__ = ["FakeBuilder", "FakeImage"]
