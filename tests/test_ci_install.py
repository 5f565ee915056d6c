"""The install step of `.ci/run`: `pip check` judged only on the lock's own packages.

The line is taken from `.ci/run` itself and run under the same `set -euo pipefail`, with a
`python3` on PATH whose `pip check` prints what a machine's own Python may print.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def check_line() -> str:
    lines = [line for line in (REPO / ".ci/run").read_text(encoding="utf-8").splitlines()
             if "pip check" in line and not line.lstrip().startswith("#")]
    assert len(lines) == 1, lines
    return lines[0]


def run_check(tmp_path: Path, printed: str, rc: int) -> subprocess.CompletedProcess:
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "check" ]; then\n'
        f"  cat {tmp_path / 'printed'}; exit {rc}\n"
        "fi\n"
        f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    (tmp_path / "printed").write_text(printed)
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{check_line()}\necho passed"],
        cwd=REPO, capture_output=True, text=True,
        env={"PATH": f"{fake.parent}:/usr/bin:/bin"})


def test_unrelated_breakage_of_the_machine_does_not_fail_ci(tmp_path):
    done = run_check(tmp_path, "botocore 1.31.0 has requirement urllib3<2.1,>=1.25.4, "
                               "but you have urllib3 2.5.0.\n", rc=1)
    assert done.returncode == 0, done.stderr
    assert "passed" in done.stdout


def test_breakage_of_a_locked_package_fails_ci_and_names_it(tmp_path):
    locked = next(line for line in (REPO / "requirements.txt").read_text().splitlines()
                  if line.startswith("gradio=="))
    version = locked.split("==")[1]
    done = run_check(tmp_path, f"gradio {version} has requirement fastapi<1.0, "
                               "but you have fastapi 9.0.\n", rc=1)
    assert done.returncode == 1
    assert re.search(r"pip check: gradio .* fastapi", done.stderr)
    assert "passed" not in done.stdout


def test_a_clean_check_passes(tmp_path):
    done = run_check(tmp_path, "No broken requirements found.\n", rc=0)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", ["requirements.txt", "requirements-dev.txt"])
def test_the_locks_pin_every_line(path):
    for line in (REPO / path).read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            assert re.match(r"^[A-Za-z0-9_.\[\],-]+==[^=]+(;.*)?$", line), line
