"""Safe image loading: decode once, refuse bombs and broken files, normalise to RGB."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from guard.core import limits
from guard.core.errors import InvalidImage

# The limits live in guard.core.limits (read there at call time); these names stay for importers.
MAX_IMAGE_BYTES = limits.MAX_IMAGE_BYTES
MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS

# Pillow refuses pictures over twice its MAX_IMAGE_PIXELS in `Image.open`, from the header,
# and warns over it. Lowering its default (about 89 megapixels) to ours makes every decoder in
# the process (Gradio's too) stop a bomb before it allocates pixels; it never loosens a
# stricter setting made elsewhere.
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > limits.MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS

ImageSource = str | os.PathLike | bytes | Image.Image


def check_image_file(path: str | os.PathLike, *, name: str | None = None) -> None:
    """Refuse a file that is missing, too large, not an image, or of too many pixels, reading
    only its header: no pixel is decoded. Call it on an upload before anything decodes it."""
    path = Path(path)
    label = name or path.name
    _check_bytes(_file_size(path, label), label)
    try:
        with open(path, "rb") as file:
            _open_checked(file, label)
    except OSError as exc:  # the file itself: permissions, a vanished upload
        raise InvalidImage(f"Image '{label}' cannot be read ({exc.strerror or exc}).") from None


def load_image(source: ImageSource, *, name: str | None = None) -> Image.Image:
    """Decode `source` (path, bytes or PIL image) into an RGB image, or raise InvalidImage."""
    label = name or (Path(source).name if isinstance(source, (str, os.PathLike)) else "image")
    if isinstance(source, Image.Image):
        return _normalise(source, label)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        _check_bytes(_file_size(path, label), label)
        data = path.read_bytes()
    else:
        data = bytes(source)
    _check_bytes(len(data), label)
    image = _open_checked(io.BytesIO(data), label)
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(_too_large(label)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(
            f"Image '{label}' is corrupt or truncated ({exc}). Re-export or re-download it."
        ) from None
    return _normalise(image, label)


def _file_size(path: Path, label: str) -> int:
    if not path.is_file():
        raise InvalidImage(f"Image '{label}' was not found at {path}. Check the file path.")
    return path.stat().st_size


def _check_bytes(size: int, label: str) -> None:
    if size > limits.MAX_IMAGE_BYTES:
        raise InvalidImage(
            f"Image '{label}' is {size / 2**20:.1f} MB; the limit is "
            f"{limits.MAX_IMAGE_BYTES / 2**20:g} MB. Resize or recompress it.")
    if size == 0:
        raise InvalidImage(
            f"'{label}' is an empty file, not an image. Attach a PNG, JPEG, GIF or WebP.")


def _open_checked(file: IO[bytes], label: str) -> Image.Image:
    """`Image.open` reads the header only; the size is checked before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)
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
    _check_size(image, label)
    return image


def _too_large(label: str) -> str:
    return (f"Image '{label}' has too many pixels to decode safely (limit "
            f"{limits.MAX_IMAGE_PIXELS / 1e6:g} megapixels). Downscale it first.")


def _check_size(image: Image.Image, label: str) -> None:
    width, height = image.size
    if width * height > limits.MAX_IMAGE_PIXELS:
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
