"""POST /v1/moderations (OpenAI's SDK) against /moderate (gradio_client), side by side.

    python bench/bench_interop.py [--rounds N]

One app on the tiny models, one client of each kind, the same conversation through both,
alternating (bench.common.side_by_side). Prints
`v1_moderations_vs_gradio_client_moderate: ratio=X.XX` (the OpenAI route's time over
gradio_client's; below 1 is faster), then one line per case.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import app  # noqa: E402
from bench.bench_app import free_port  # noqa: E402
from bench.common import device_line, report, side_by_side  # noqa: E402
from guard.engines.service import tiny_guards  # noqa: E402
from guard.testing.tiny import BENIGN, PICTURE, RED, VIOLENT, swatch  # noqa: E402


def cases(folder: Path) -> list[tuple[str, dict, str, list[str]]]:
    """(name, /v1/moderations arguments, /moderate conversation JSON, /moderate files)."""
    red = folder / "red.png"
    swatch(RED).save(red)
    data_url = "data:image/png;base64," + base64.b64encode(red.read_bytes()).decode()
    turns = [{"role": "user", "content": BENIGN},
             {"role": "assistant", "content": "Mix flour, water and starter."},
             {"role": "user", "content": VIOLENT}]
    return [
        ("text", {"input": VIOLENT}, json.dumps([{"role": "user", "content": VIOLENT}]), []),
        ("three_turns", {"input": "", "extra_body": {"messages": turns}}, json.dumps(turns), []),
        ("image", {"input": [{"type": "text", "text": PICTURE},
                             {"type": "image_url", "image_url": {"url": data_url}}]},
         json.dumps([{"role": "user", "content": [{"type": "text", "text": PICTURE},
                                                  {"type": "image", "path": "red.png"}]}]),
         [str(red)]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    from gradio_client import Client, handle_file
    from openai import OpenAI

    guards = tiny_guards(os.environ.get("GUARD_LAB_TINY_DIR") or REPO / ".cache" / "tiny")
    folder = Path(tempfile.mkdtemp(prefix="bench-interop-"))
    demo = app.build_demo(guards, tiny=True, swatch_dir=str(folder / "swatches"))
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(), quiet=True)
    openai_client = OpenAI(base_url=url + "v1", api_key="unused", max_retries=0)
    gradio_client = Client(url, verbose=False)
    rows, total_ours, total_base = [], 0.0, 0.0
    try:
        for name, request, conversation, files in cases(folder):
            def ours(_: int, request=request):
                return openai_client.moderations.create(**request).results[0].flagged

            def baseline(_: int, conversation=conversation, files=files):
                result = gradio_client.predict(conversation, [handle_file(f) for f in files],
                                               "", None, api_name="/moderate")
                return result["verdict"] == "unsafe"

            assert ours(0) == baseline(0) is True  # the same answer, before any timing
            t_ours, t_base = side_by_side(ours, baseline, 1, rounds=args.rounds)
            rows.append((name, t_ours / args.rounds, t_base / args.rounds))
            total_ours += t_ours
            total_base += t_base
    finally:
        demo.close()
    report("v1_moderations_vs_gradio_client_moderate", total_ours, total_base,
           len(rows) * args.rounds, f"{len(rows)} cases x {args.rounds} rounds, alternating")
    for name, o, b in rows:
        print(f"  {name:12s} /v1/moderations {o * 1e3:7.1f} ms   gradio_client /moderate "
              f"{b * 1e3:7.1f} ms   ratio={o / b:.2f}")
    print(device_line(guards.llama_guard.describe().device))


if __name__ == "__main__":
    main()
