"""flyte-images inside the Flyte SDK: `from_flyte` (a `flyte.Image` as ours) and the image builder
plugin flyte loads from the entry point `flyte-images` (`plugin.FlyteImagesBuilder`).

flyte is an optional dependency (`pip install 'flyte-images[flyte]'`): nothing here imports it
until a flyte image is converted or flyte loads the plugin, so `import flyte_images` never does.
"""

from ._compat import FlyteConversionError, UnsupportedFlyteError, UntranslatableLayerError
from .convert import from_flyte

__all__ = ["FlyteConversionError", "UnsupportedFlyteError", "UntranslatableLayerError", "from_flyte"]
