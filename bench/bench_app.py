"""The /moderate round trip through gradio_client against the direct engine call (tiny models).

    python bench/bench_app.py [--repeats N]

Prints `app_moderate_roundtrip: ratio=X.XX` (through the app / direct), then details.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import app  # noqa: E402
from guard.engines.service import moderate, tiny_guards  # noqa: E402
from guard.testing.tiny import BENIGN, PICTURE, RED, VIOLENT, swatch  # noqa: E402
from guard_app.api.logic import build_conversation  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cases(folder: Path) -> list[tuple[str, str, list[str]]]:
    red = folder / "red.png"
    swatch(RED).save(red)
    image = json.dumps([{"role": "user", "content": [
        {"type": "text", "text": PICTURE}, {"type": "image", "path": "red.png"}]}])
    return [
        ("text", json.dumps([{"role": "user", "content": VIOLENT}]), []),
        ("two_turns", json.dumps([{"role": "user", "content": BENIGN},
                                  {"role": "assistant", "content": "Mix flour and water."}]), []),
        ("image", image, [str(red)]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    tiny_dir = os.environ.get("GUARD_LAB_TINY_DIR") or REPO / ".cache" / "tiny"
    guards = tiny_guards(tiny_dir)
    folder = Path(tempfile.mkdtemp(prefix="bench-app-"))
    demo = app.build_demo(guards, tiny=True, swatch_dir=str(folder / "swatches"))
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(), quiet=True)
    client = Client(url, verbose=False)
    rows = []
    try:
        for name, conversation, files in cases(folder):
            # Direct: the same work the endpoint does (parse, decode images, both models).
            def direct(conversation=conversation, files=files):
                return moderate(guards, build_conversation(conversation, files),
                                ("S2",)).to_json()

            def through_app(conversation=conversation, files=files):
                return client.predict(conversation, [handle_file(f) for f in files], "S2", None,
                                      api_name="/moderate")

            assert direct()["verdict"] == through_app()["verdict"]  # warm up, same answer
            d, a = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                direct()
                d.append(time.perf_counter() - started)
                started = time.perf_counter()
                through_app()
                a.append(time.perf_counter() - started)
            rows.append((name, statistics.median(d), statistics.median(a)))
    finally:
        demo.close()
    direct_total = sum(r[1] for r in rows)
    app_total = sum(r[2] for r in rows)
    print(f"app_moderate_roundtrip: ratio={app_total / direct_total:.2f}")
    print(f"repeats={args.repeats} per case, medians; tiny models on "
          f"{guards.llama_guard.describe().device}")
    for name, d, a in rows:
        print(f"  {name:10s} direct={d * 1000:8.1f} ms  app={a * 1000:8.1f} ms  "
              f"overhead={(a - d) * 1000:7.1f} ms/request  ratio={a / d:.2f}")
    print(f"  mean overhead {(app_total - direct_total) / len(rows) * 1000:.1f} ms/request")


if __name__ == "__main__":
    main()
