"""flyte-images inside the Flyte SDK: `from_flyte` (a `flyte.Image` as ours) and the image builder
plugin flyte loads from the entry point `flyte-images` (`plugin.FlyteImagesBuilder`). flyte is an
optional dependency (`flyte-images[flyte]`), imported only to convert an image or by the plugin.
"""

from ._compat import FlyteConversionError, UnsupportedFlyteError, UntranslatableLayerError
from .convert import from_flyte

__all__ = ["FlyteConversionError", "UnsupportedFlyteError", "UntranslatableLayerError", "from_flyte"]
