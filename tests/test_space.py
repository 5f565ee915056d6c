"""The README's front matter is a Space configuration the Hub accepts, and that ZeroGPU runs.

The rules are the Hub's (hub-docs, spaces-config-reference and spaces-zerogpu): known keys only,
`short_description` at most 60 characters, the colours of the palette. The versions are read from
the lock, as the Space installs it, and checked against ZeroGPU's own list (below).
"""

from __future__ import annotations

import re

import pytest
from helpers import REPO
from huggingface_hub import metadata_load
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

from guard.versions import problems, supported_ranges

ACCEPTED = {
    "title", "emoji", "colorFrom", "colorTo", "sdk", "python_version", "sdk_version",
    "suggested_hardware", "suggested_storage", "app_file", "app_build_command", "app_port",
    "base_path", "fullWidth", "header", "short_description", "models", "datasets", "tags",
    "thumbnail", "pinned", "hf_oauth", "hf_oauth_scopes", "hf_oauth_expiration_minutes",
    "hf_oauth_authorized_org", "disable_embedding", "startup_duration_timeout",
    "custom_headers", "license", "preload_from_hub",
}
COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
# ZeroGPU's supported versions, as listed by huggingface/hub-docs docs/hub/spaces-zerogpu.md
# (2026-08-22): "PyTorch 2.8.0, 2.9.1, 2.10.0, 2.11.0; Python 3.12.12 or 3.10.13". A Space that
# pins a torch outside this list fails to build ("No candidate PyTorch version found for ZeroGPU").
ZEROGPU_SOURCE = "huggingface/hub-docs docs/hub/spaces-zerogpu.md (2026-08-22)"
ZEROGPU_PYTHON = {"3.10": "3.10.13", "3.12": "3.12.12"}
ZEROGPU_TORCH = {Version(v) for v in ("2.8.0", "2.9.1", "2.10.0", "2.11.0")}


@pytest.fixture(scope="module")
def front() -> dict:
    return metadata_load(REPO / "README.md")


def locked(name: str, python_version: str) -> Version:
    """The version requirements.txt installs for `name` on that Python (markers applied)."""
    environment = {**default_environment(), "python_version": python_version,
                   "python_full_version": f"{python_version}.0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64"}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if not line or line[0] in "# -":
            continue
        requirement = Requirement(line)
        if requirement.name.lower() == name and (
                requirement.marker is None or requirement.marker.evaluate(environment)):
            return Version(str(requirement.specifier).removeprefix("=="))
    raise AssertionError(f"{name} is not locked for Python {python_version}")


def test_only_keys_the_hub_knows(front):
    assert set(front) <= ACCEPTED, set(front) - ACCEPTED
    assert {front["colorFrom"], front["colorTo"]} <= COLOURS
    assert front["sdk"] == "gradio" and (REPO / front["app_file"]).is_file()


def test_short_description_fits_the_hub_limit(front):
    assert 0 < len(front["short_description"]) <= 60


def test_sdk_version_is_the_locked_gradio(front):
    assert Version(str(front["sdk_version"])) == locked("gradio", str(front["python_version"]))


def test_python_and_torch_are_what_zerogpu_documents(front):
    python = str(front["python_version"])
    assert front["suggested_hardware"].startswith("zero-")
    assert re.fullmatch(r"3\.\d+", python) and python in ZEROGPU_PYTHON
    torch = locked("torch", python)
    assert torch in ZEROGPU_TORCH, f"torch {torch} is not in ZeroGPU's list ({ZEROGPU_SOURCE})"
    assert locked("torchvision", python).minor == torch.minor + 15  # the pair torch publishes


def test_the_pyproject_pins_the_space_torch_zerogpu_lists():
    """The intent (pyproject.toml) names the same torch as the lock, so .ci/lock keeps it."""
    text = (REPO / "pyproject.toml").read_text()
    pinned = re.findall(r'"torch==([\d.]+); python_version >= \'3\.12\'"', text)
    assert [Version(v) for v in pinned] == [locked("torch", "3.12")]
    assert "docs/hub/spaces-zerogpu.md" in text  # the source is named beside the pin


def test_reviewers_sign_in_with_hugging_face(front):
    assert front["hf_oauth"] is True
    org = front.get("hf_oauth_authorized_org")
    assert org is None or isinstance(org, str) or all(isinstance(o, str) for o in org)


def test_the_lock_is_within_the_supported_ranges():
    """The start-up check passes on the lock of this interpreter; 5.24.0 and 5.25.0 (both break
    Llama 4) stay excluded."""
    versions = {name: str(locked(name, "3.11")) for name in ("torch", "transformers", "gradio")}
    assert problems(installed=versions) == []
    assert not supported_ranges()["transformers"].specifier.contains("5.24.0")
    assert not supported_ranges()["transformers"].specifier.contains("5.25.0")


def test_the_version_check_names_a_version_outside_the_range():
    found = problems(installed={"torch": "2.14.1", "transformers": "5.24.0", "gradio": "5.0.0"})
    assert found == ["transformers 5.24.0 (tested: !=5.24.0,!=5.25.0,<6,>=5.0)",
                     "gradio 5.0.0 (tested: <7,>=6.0)"]
