"""Start-up time of the CLI: `slmkit --help` and `slmkit validate recipes/quickstart.yaml`.

Each command runs in a fresh process ``--repeats`` times; the figures are the median wall time
and the spread. ``--source DIR`` times another checkout of slmkit (its package directory first
on PYTHONPATH) against this one in the same run, so both are measured under the same load:

    .venv/bin/python scripts/bench_cli_startup.py --source /tmp/slmkit-before

The last line is one JSON object: {"help_s": ..., "validate_s": ..., "torch_at_validate": ...}
(and the same with a ``before_`` prefix when --source is given).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import sys, runpy\nsys.argv = ['slmkit'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('slmkit', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('TORCH', 'torch' in sys.modules, file=sys.stderr)")


def _run_once(source: Path, args: list[str]) -> tuple[float, bool]:
    env = {**os.environ, "PYTHONPATH": str(source), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=source, env=env, capture_output=True, text=True,
                         check=False)
    return time.perf_counter() - t0, "TORCH True" in out.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--source", type=Path, default=None, help="another checkout to time in the same run")
    args = parser.parse_args()
    sides = {"": ROOT} | ({"before_": args.source.resolve()} if args.source else {})
    walls: dict[str, list[float]] = {}
    result: dict = {}
    for _ in range(args.repeats):  # alternate the sides, so load on the machine affects both alike
        for name, cmd in (("help", ["--help"]), ("validate", ["validate", "recipes/quickstart.yaml"])):
            for prefix, source in sides.items():
                wall, torch_loaded = _run_once(source, cmd)
                walls.setdefault(f"{prefix}{name}", []).append(wall)
                result[f"{prefix}torch_at_{name}"] = torch_loaded
    for key, values in walls.items():
        result[f"{key}_s"] = round(statistics.median(values), 3)
        result[f"{key}_spread_s"] = [round(min(values), 3), round(max(values), 3)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
