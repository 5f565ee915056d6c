"""Safe image loading: decode once, refuse bombs and broken files, normalise to RGB.

Memory is counted before any pixel is decoded: the pixel limit is a byte budget, the bytes of
the largest 8-bit RGB picture allowed (`limits.MAX_IMAGE_PIXELS` x 3), and each image is
charged the bytes per pixel of its own mode (4 for 32-bit float or integer, RGBA and CMYK, 2
for 16-bit, 1 for palette and grey). Converting to 8-bit RGB then holds at most one extra copy
at a time: each step makes the next image and drops the one before, and 16-bit and float
pixels are scaled a strip at a time instead of as whole float64 arrays.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

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
        return _normalise(source, label, owned=False)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        _check_bytes(_file_size(path, label), label)
        data = path.read_bytes()
    else:
        data = bytes(source)
    _check_bytes(len(data), label)
    # The decoded image is handed straight on: no name here keeps it alive while _normalise
    # converts it, so each step can free the image before it.
    return _normalise(_decoded(io.BytesIO(data), label), label)


def _decoded(file: IO[bytes], label: str) -> Image.Image:
    image = _open_checked(file, label)
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(_too_large(label)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(
            f"Image '{label}' is corrupt or truncated ({exc}). Re-export or re-download it."
        ) from None
    return image


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


def bytes_per_pixel(mode: str) -> int:
    """Bytes one pixel of `mode` takes decoded: its bands times the bytes of each (an unknown
    mode counts as the widest, 4)."""
    try:
        described = ImageMode.getmode(mode)
    except KeyError:
        return 4
    return len(described.bands) * int(described.typestr[-1])


def decoded_bytes_limit() -> int:
    """The most bytes one image may take decoded: `limits.MAX_IMAGE_PIXELS` of 8-bit RGB."""
    return limits.MAX_IMAGE_PIXELS * 3


def _check_size(image: Image.Image, label: str) -> None:
    width, height = image.size
    if width * height > limits.MAX_IMAGE_PIXELS:
        raise InvalidImage(_too_large(label))
    if width < 1 or height < 1:
        raise InvalidImage(f"Image '{label}' has no pixels. Attach a real picture.")
    per_pixel, budget = bytes_per_pixel(image.mode), decoded_bytes_limit()
    if width * height * per_pixel > budget:
        raise InvalidImage(
            f"Image '{label}' is {width:,}x{height:,} in mode {image.mode} ({per_pixel} bytes a "
            f"pixel): {width * height * per_pixel / 1e6:,.0f} MB decoded, over the "
            f"{budget / 1e6:g} MB one image may take ({limits.MAX_IMAGE_PIXELS / 1e6:g} "
            f"megapixels of 8-bit RGB). Downscale it to {budget // per_pixel / 1e6:.1f} "
            "megapixels or less, or save it as 8-bit RGB.")


_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_WITH_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def _normalise(image: Image.Image, label: str, *, owned: bool = True) -> Image.Image:
    """Apply EXIF orientation and convert every mode to 8-bit RGB.

    Each step rebinds `image`, so the image before it is freed as soon as the next exists:
    at most one extra copy at a time. `owned`: the image was decoded here and may be changed
    (a caller's image is left as it is)."""
    _check_size(image, label)
    image = _upright(image, owned=owned)
    try:
        if image.mode in _HIGH_DEPTH:
            image = _to_8bit(image)
        if image.mode == "P":
            image = _palette_on_white(image) if image.has_transparency_data \
                else image.convert("RGB")
        if image.mode == "LA":  # grey over white, then RGB: no RGBA copy
            grey = Image.new("L", image.size, 255)
            grey.paste(image, mask=image)  # an LA mask: its alpha band
            image = grey
        if image.mode in _WITH_ALPHA:
            if image.mode != "RGBA":
                image = image.convert("RGBA")
            return _on_white(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
    except ValueError as exc:  # a mode Pillow cannot convert, such as premultiplied "La"
        raise InvalidImage(
            f"Image '{label}' is in colour mode {image.mode}, which Guard Lab cannot convert "
            f"({exc}). Save it as 8-bit RGB.") from None
    return image


def _upright(image: Image.Image, *, owned: bool) -> Image.Image:
    """The image turned as its EXIF orientation says, and ours to change from here on. Our
    own decoded image is turned in place (two copies only while turning); a caller's image is
    copied, as it is not ours to change."""
    if not owned:
        return ImageOps.exif_transpose(image)
    ImageOps.exif_transpose(image, in_place=True)
    return image


def _palette_on_white(image: Image.Image) -> Image.Image:
    """A palette image with transparency (changed here), over white, as RGB: its 256 colours
    are put over white (the same blend as for each pixel), so no RGBA copy of the whole
    picture is made."""
    palette = image.getpalette("RGBA")
    if palette is None:  # no palette to blend: Pillow's own conversion
        return _on_white(image.convert("RGBA"))
    swatch = Image.new("P", (256, 1))
    swatch.putdata(range(256))
    swatch.putpalette(palette, "RGBA")
    if "transparency" in image.info:
        swatch.info["transparency"] = image.info["transparency"]
    colours = _on_white(swatch.convert("RGBA")).tobytes()
    image.info.pop("transparency", None)
    image.putpalette(colours, "RGB")
    return image.convert("RGB")


def _on_white(image: Image.Image) -> Image.Image:
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image)  # an RGBA mask: its alpha band
    return background


_STRIP_PIXELS = 1 << 20  # pixels scaled at a time: 8 MB of float64


def _strips(image: Image.Image) -> list[tuple[int, int, int, int]]:
    rows = max(1, _STRIP_PIXELS // image.width)
    return [(0, top, image.width, min(top + rows, image.height))
            for top in range(0, image.height, rows)]


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit or float greyscale to 0-255 instead of clipping it.

    16-bit spans 0-65535; 32-bit and float span their own values, widened to take in 0 and 1.
    Not-a-number pixels become 0, infinities the ends of the range. Computed a strip at a
    time: the only full-size image made is the 8-bit result."""
    import numpy as np

    out = Image.new("L", image.size)
    if image.mode.startswith("I;16"):
        table = np.round(np.arange(65536, dtype=np.float64) / 65535.0 * 255.0).astype(np.uint8)
        for box in _strips(image):
            out.paste(Image.fromarray(table[np.asarray(image.crop(box))]), box)
        return out
    low, high = _finite_range(image)
    low, high = min(low, 0.0), max(high, 1.0)
    for box in _strips(image):
        array = np.asarray(image.crop(box), dtype=np.float64)
        np.nan_to_num(array, copy=False, nan=low, posinf=high, neginf=low)
        array -= low  # the operations, in their order, of the whole-array formula
        array /= high - low
        array *= 255.0
        np.clip(array, 0, 255, out=array)
        out.paste(Image.fromarray(np.round(array, out=array).astype(np.uint8)), box)
    return out


def _finite_range(image: Image.Image) -> tuple[float, float]:
    """The smallest and largest finite pixel values ((0, 0) when none is finite)."""
    import numpy as np

    if image.mode != "F":  # whole numbers are all finite
        low, high = image.getextrema()
        return float(low), float(high)
    found_low, found_high = np.inf, -np.inf
    for box in _strips(image):
        array = np.asarray(image.crop(box))
        finite = np.isfinite(array)
        if not finite.all():
            array = array[finite]
            if not array.size:
                continue
        found_low, found_high = min(found_low, array.min()), max(found_high, array.max())
    if found_low > found_high:
        return 0.0, 0.0
    return float(found_low), float(found_high)
