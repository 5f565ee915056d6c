"""Images are charged their decoded bytes before decoding, and converted with one copy at a time.

Issue 20, row 4: a 265 KB 6300x6300 float32 TIFF passed every limit and `_to_8bit` made several
float64 copies of it (+1.2 GB for one image). The pixel limit is now a byte budget counted in
the bytes per pixel of the image's own mode, and conversion holds at most one extra copy.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO
from PIL import Image

from guard.core import images, limits
from guard.core.errors import InvalidImage
from guard.core.images import bytes_per_pixel, check_image_file, load_image

MB = 1e6


def tiff(mode: str, side: int, value) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (side, side), value).save(buffer, format="TIFF",
                                               compression="tiff_adobe_deflate")
    return buffer.getvalue()


def test_each_mode_is_charged_its_own_bytes_per_pixel():
    assert {mode: bytes_per_pixel(mode) for mode in (
        "1", "L", "P", "LA", "PA", "I;16", "I;16B", "RGB", "YCbCr", "RGBA", "CMYK", "I", "F")} == {
        "1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "I;16": 2, "I;16B": 2, "RGB": 3, "YCbCr": 3,
        "RGBA": 4, "CMYK": 4, "I": 4, "F": 4}
    assert images.decoded_bytes_limit() == limits.MAX_IMAGE_PIXELS * 3


def test_the_issue_float_tiff_is_refused_from_its_header(tmp_path):
    data = tiff("F", 6300, 0.5)  # 39.7 megapixels: under the pixel limit, 159 MB decoded
    assert len(data) < 400_000
    path = tmp_path / "float.tiff"
    path.write_bytes(data)
    for refuse in (lambda: check_image_file(path), lambda: load_image(data, name="float.tiff")):
        with pytest.raises(InvalidImage) as refused:
            refuse()
        assert str(refused.value) == (
            "Image 'float.tiff' is 6,300x6,300 in mode F (4 bytes a pixel): 159 MB decoded, over "
            "the 120 MB one image may take (40 megapixels of 8-bit RGB). Downscale it to 30.0 "
            "megapixels or less, or save it as 8-bit RGB.")


@pytest.mark.parametrize("mode, value", [("RGBA", (1, 2, 3, 4)), ("CMYK", (1, 2, 3, 4)),
                                         ("I", 70000)])
def test_four_byte_modes_over_the_budget_are_refused(mode, value):
    with pytest.raises(InvalidImage, match=f"in mode {mode} \\(4 bytes a pixel\\)"):
        load_image(tiff(mode, 6300, value))


def test_an_rgb_photo_at_the_pixel_limit_still_passes(monkeypatch):
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 10_000)
    assert load_image(Image.new("RGB", (100, 100))).size == (100, 100)
    assert load_image(Image.new("I;16", (100, 100))).size == (100, 100)  # 2 bytes: fits
    with pytest.raises(InvalidImage, match="in mode F"):
        load_image(Image.new("F", (100, 100)))  # 4 bytes a pixel: 40 KB of a 30 KB budget
    assert load_image(Image.new("F", (86, 86))).size == (86, 86)


def old_to_8bit(array: np.ndarray, sixteen: bool) -> np.ndarray:
    """The conversion as it was (whole float64 arrays): the reference for the values."""
    array = array.astype(np.float64)
    high = 65535.0 if sixteen else max(float(array.max()), 1.0)
    low = 0.0 if sixteen else min(float(array.min()), 0.0)
    return np.clip((array - low) / (high - low) * 255.0, 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize("dtype, sixteen", [(np.float32, False), (np.int32, False),
                                            (np.uint16, True)])
def test_strips_give_the_values_of_the_whole_array_conversion(monkeypatch, dtype, sixteen):
    monkeypatch.setattr(images, "_STRIP_PIXELS", 997)  # many strips, the last one short
    rng = np.random.default_rng(7)
    array = (rng.standard_normal((120, 90)) * 3000).astype(dtype) if not sixteen \
        else rng.integers(0, 65535, (120, 90)).astype(dtype)
    out = np.asarray(load_image(Image.fromarray(array)))
    assert out.shape == (120, 90, 3)
    expected = old_to_8bit(array, sixteen)
    assert (out[..., 0] == expected).all() and (out[..., 2] == expected).all()


def test_not_a_number_and_infinities_have_fixed_places():
    array = np.array([[np.nan, 1.0, np.inf], [4.0, -4.0, -np.inf]], dtype=np.float32)
    grey = np.asarray(load_image(Image.fromarray(array)))[..., 0]
    # The finite values span -4..4: NaN and -inf go to the bottom, +inf to the top.
    assert grey.tolist() == [[0, 159, 255], [255, 0, 0]]
    assert np.asarray(load_image(Image.fromarray(np.full((2, 2), np.nan, np.float32)))).max() == 0


def test_transparency_goes_over_white_as_before():
    rgba = Image.new("RGBA", (4, 4), (200, 0, 0, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    out = load_image(rgba)
    assert out.getpixel((0, 0)) == (10, 20, 30) and out.getpixel((1, 1)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 9, 9, 9] + [0] * 762)
    assert load_image(palette).getpixel((0, 0)) == (9, 9, 9)
    palette.info["transparency"] = 1
    assert load_image(palette).getpixel((0, 0)) == (255, 255, 255)
    assert palette.info["transparency"] == 1  # a caller's image is not changed
    half = Image.new("P", (2, 1), 1)
    half.putpalette([0, 0, 0, 100, 0, 200] + [0] * 762)
    half.info["transparency"] = bytes([255, 128])  # index 1 half transparent
    assert load_image(half).getpixel((0, 0)) == load_image(half.convert("RGBA")).getpixel((0, 0))


def test_a_mode_pillow_cannot_convert_is_refused_plainly():
    with pytest.raises(InvalidImage, match="colour mode La, which Guard Lab cannot convert"):
        load_image(Image.new("La", (4, 4)))


def test_a_callers_image_is_left_as_it_was():
    source = Image.new("RGB", (30, 10), (1, 2, 3))
    exif = source.getexif()
    exif[0x0112] = 6  # rotated: the upright picture is 10x30
    buffer = io.BytesIO()
    source.save(buffer, format="PNG", exif=exif)
    opened = Image.open(io.BytesIO(buffer.getvalue()))
    opened.load()
    out = load_image(opened)
    assert (out.size, opened.size) == ((10, 30), (30, 10))
    assert load_image(buffer.getvalue()).size == (10, 30)
    rgb = Image.new("RGB", (3, 3))
    assert load_image(rgb) is not rgb


PEAK = """
import json, sys, time
from guard.core.images import load_image
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
data = open(sys.argv[1], "rb").read()
import numpy  # the conversion's own import is not its memory
open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from what is resident
base = peak_mb()
started = time.perf_counter()
image = load_image(data)
print(json.dumps({"mb": peak_mb() - base, "seconds": time.perf_counter() - started,
                  "size": image.size}))
"""


@pytest.mark.parametrize("mode, value", [("F", 0.25), ("I;16", 3000), ("P", 3)])
def test_converting_a_deep_image_holds_one_extra_copy(tmp_path, mode, value):
    """4000x4000: 64 MB decoded as float (32 as 16-bit, 16 as palette), 16 MB as 8-bit grey,
    64 MB as RGB in Pillow's memory (4 bytes a pixel). One copy at a time peaks near 80 MB;
    before, the float64 arrays took 440 MB, and a transparent palette's RGBA copies 280 MB."""
    path = tmp_path / "deep.img"
    if mode == "F":
        path.write_bytes(tiff(mode, 4000, value))
    elif mode == "P":
        picture = Image.new(mode, (4000, 4000), value)
        picture.putpalette([i % 256 for i in range(768)])
        picture.save(path, format="PNG", transparency=value)
    else:
        Image.new(mode, (4000, 4000), value).save(path, format="PNG")
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], cwd=REPO, capture_output=True,
                         text=True, timeout=300, check=True)
    measured = json.loads(out.stdout)
    assert measured["size"] == [4000, 4000]
    assert measured["mb"] < 200, measured
