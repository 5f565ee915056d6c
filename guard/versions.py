"""Start-up check of the installed torch, transformers and gradio against the tested ranges.

The ranges are the ones pyproject.toml states (the lock is made from them), so a fresh install
that resolved a release outside them (transformers 5.24.0 breaks every Llama 4 forward) stops
with one line that names the versions and the command that installs the lock, instead of a
traceback deep inside a forward pass. GUARD_LAB_SKIP_VERSION_CHECK=1 skips it.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
CHECKED = ("torch", "transformers", "gradio")
LOCK_COMMAND = "pip install --no-deps -r requirements.txt"


def supported_ranges(pyproject: Path = PYPROJECT) -> dict[str, Requirement]:
    """{name: requirement} of the runtime dependencies that apply to this interpreter."""
    if not pyproject.is_file():
        return {}
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    ranges = {}
    for line in data.get("project", {}).get("dependencies", []):
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            ranges[requirement.name.lower()] = requirement
    return ranges


def problems(packages: Iterable[str] = CHECKED, pyproject: Path = PYPROJECT,
             installed: Mapping[str, str] | None = None) -> list[str]:
    """'transformers 5.24.0 (tested: >=5.0,<6,!=5.24.0)' for each package outside its range."""
    ranges = supported_ranges(pyproject)
    found = []
    for name in packages:
        requirement = ranges.get(name)
        if requirement is None:
            continue
        try:
            version = installed[name] if installed is not None else metadata.version(name)
        except (KeyError, metadata.PackageNotFoundError):
            found.append(f"{name} is not installed (tested: {requirement.specifier})")
            continue
        if not requirement.specifier.contains(Version(version), prereleases=True):
            found.append(f"{name} {version} (tested: {requirement.specifier})")
    return found


def check_or_exit(packages: Iterable[str] = CHECKED, environ: Mapping[str, str] = os.environ
                  ) -> None:
    """Exit with status 2 and one line on stderr when a package is outside its tested range."""
    if environ.get("GUARD_LAB_SKIP_VERSION_CHECK", "").strip().lower() in {"1", "true", "yes"}:
        return
    found = problems(packages)
    if found:
        print(f"Guard Lab was not tested with {'; '.join(found)}. Install the lock: "
              f"{LOCK_COMMAND} (or set GUARD_LAB_SKIP_VERSION_CHECK=1 to try anyway).",
              file=sys.stderr)
        raise SystemExit(2)
