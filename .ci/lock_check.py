"""Read `pip check` on stdin; fail on the lines that name a package of the given locks."""

import re
import sys
from pathlib import Path

from packaging.requirements import Requirement


def names(paths: list[str]) -> set[str]:
    found = set()
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and line[0] not in "#-":
                found.add(re.sub(r"[-_.]+", "-", Requirement(line).name.lower()))
    return found


locked = names(sys.argv[1:])
ours = [line for line in sys.stdin.read().splitlines()
        if line.split() and re.sub(r"[-_.]+", "-", line.split()[0].lower()) in locked]
for line in ours:
    print(f"pip check: {line}", file=sys.stderr)
sys.exit(1 if ours else 0)
