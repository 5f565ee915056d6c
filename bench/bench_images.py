"""Image decoding benchmark: peak memory and time of `load_image` on deep images (issue 20, row 4).

Each measurement runs in a fresh process, its peak resident memory (VmHWM) reset just before
(Linux). The baseline is the
conversion as it was before the byte budget: whole-image float64 arrays (kept here as
`_whole_array`, run on the same decoded image). Prints `NAME: ratio=X.XX` lines (ours divided by
the baseline; below 1 means ours is smaller or faster), then details.

    python bench/bench_images.py
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIDE = 4000  # 16 megapixels: 64 MB as float, 32 MB as 16-bit

CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
from PIL import Image
from guard.core import images

def _whole_array(image):
    array = np.asarray(image, dtype=np.float64)
    high = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
    low = 0.0 if image.mode.startswith("I;16") else min(float(array.min()), 0.0)
    scaled = np.clip((array - low) / (high - low) * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled).convert("RGB")

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

data = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from what is resident
base = peak_mb()
started = time.perf_counter()
if sys.argv[2] == "ours":
    out = images.load_image(data)
else:
    image = Image.open(__import__("io").BytesIO(data))
    image.load()
    out = _whole_array(image)
print(json.dumps({{"seconds": time.perf_counter() - started,
                   "mb": peak_mb() - base}}))
"""


def picture(mode: str, folder: Path) -> Path:
    from PIL import Image

    path = folder / f"{mode.replace(';', '')}.img"
    value = 0.25 if mode == "F" else 3000
    buffer = io.BytesIO()
    Image.new(mode, (SIDE, SIDE), value).save(
        buffer, format="TIFF" if mode == "F" else "PNG",
        **({"compression": "tiff_adobe_deflate"} if mode == "F" else {}))
    path.write_bytes(buffer.getvalue())
    return path


def measure(path: Path, side: str) -> dict[str, float]:
    code = CHILD.format(repo=str(REPO))
    runs = [json.loads(subprocess.run([sys.executable, "-c", code, str(path), side],
                                      capture_output=True, text=True, check=True).stdout)
            for _ in range(2)]
    return {"seconds": min(r["seconds"] for r in runs), "mb": min(r["mb"] for r in runs)}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("F", "I;16"):
            path = picture(mode, Path(folder))
            ours, base = measure(path, "ours"), measure(path, "baseline")
            name = "images_float" if mode == "F" else "images_16bit"
            print(f"{name}_peak_memory: ratio={ours['mb'] / base['mb']:.2f}")
            print(f"{name}_time: ratio={ours['seconds'] / base['seconds']:.2f}")
            print(f"  {SIDE}x{SIDE} {mode} ({path.stat().st_size / 1024:.0f} KB): ours "
                  f"{ours['mb']:.0f} MB, {ours['seconds']:.2f} s; baseline {base['mb']:.0f} MB, "
                  f"{base['seconds']:.2f} s", flush=True)


if __name__ == "__main__":
    main()
