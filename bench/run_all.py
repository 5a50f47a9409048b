"""Run every benchmark in turn (``make bench``) and print their figures.

Each benchmark is its own process with its own dev server, so one's leftovers
cannot skew the next. Benchmarks print figures; they do not assert timings.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["orchestration_overhead.py", "throughput.py", "resume_time.py"]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / name)], cwd=HERE.parent)
        print(f"   ({time.monotonic() - t0:.0f}s, exit {code})\n", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
