"""Write the tiny models into guard/testing/prebuilt, trained from their recipes on this machine.

    python -m guard.testing.ship

Run it after changing a recipe or its examples (the shipped builds are then of another content
key and a fresh clone would train instead of copying), and commit the result.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from guard.testing._tiny_common import MARKER, SHIPPED_DIR
from guard.testing.tiny import build_tiny_models
from guard.testing.tiny_text import build_tiny_text_model


def build_all(root: Path) -> list[Path]:
    """Train every tiny model under `root`, never copying a shipped one."""
    lg_dir, pg_dir = build_tiny_models(root, use_shipped=False)
    return [lg_dir, pg_dir, build_tiny_text_model(root, use_shipped=False).hf_dir]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for folder in build_all(Path(tmp)):
            target = SHIPPED_DIR / folder.name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(folder, target)
            print(f"shipped {target} ({(target / MARKER).read_text()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
