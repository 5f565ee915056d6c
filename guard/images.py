"""Safe image loading: decode once, refuse bombs and broken files, normalise to RGB."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImage

MAX_IMAGE_BYTES = 20 * 1024 * 1024
# About 40 megapixels: a 12 MP phone photo passes, a decompression bomb does not.
MAX_IMAGE_PIXELS = 40_000_000

ImageSource = str | os.PathLike | bytes | Image.Image


def load_image(source: ImageSource, *, name: str | None = None) -> Image.Image:
    """Decode `source` (path, bytes or PIL image) into an RGB image, or raise InvalidImage."""
    label = name or (Path(source).name if isinstance(source, (str, os.PathLike)) else "image")
    if isinstance(source, Image.Image):
        return _normalise(source, label)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImage(f"Image '{label}' was not found at {path}. Check the file path.")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise InvalidImage(
                f"Image '{label}' is {path.stat().st_size / 2**20:.1f} MB; the limit is "
                f"{MAX_IMAGE_BYTES // 2**20} MB. Resize or recompress it.")
        data = path.read_bytes()
    else:
        data = bytes(source)
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidImage(
                f"Image '{label}' is {len(data) / 2**20:.1f} MB; the limit is "
                f"{MAX_IMAGE_BYTES // 2**20} MB. Resize or recompress it.")
    if not data:
        raise InvalidImage(f"'{label}' is an empty file, not an image. Attach a PNG, JPEG, GIF or WebP.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image, label)
            image.load()
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(_too_large(label)) from None
    except UnidentifiedImageError:
        raise InvalidImage(
            f"'{label}' is not an image Guard Lab can read. Attach a PNG, JPEG, GIF or WebP file."
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(
            f"Image '{label}' is corrupt or truncated ({exc}). Re-export or re-download it."
        ) from None
    return _normalise(image, label)


def _too_large(label: str) -> str:
    return (f"Image '{label}' has too many pixels to decode safely (limit "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels). Downscale it first.")


def _check_size(image: Image.Image, label: str) -> None:
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidImage(_too_large(label))
    if width < 1 or height < 1:
        raise InvalidImage(f"Image '{label}' has no pixels. Attach a real picture.")


def _normalise(image: Image.Image, label: str) -> Image.Image:
    """Apply EXIF orientation and convert every mode to 8-bit RGB."""
    _check_size(image, label)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit or float greyscale to 0-255 instead of clipping it."""
    import numpy as np

    array = np.asarray(image, dtype=np.float64)
    high = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
    low = 0.0 if image.mode.startswith("I;16") else min(float(array.min()), 0.0)
    scaled = np.clip((array - low) / (high - low) * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled)
