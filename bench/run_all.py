"""Run every benchmark in turn (``make bench``) and print their figures.

``python bench/run_all.py [SCRIPT ...]`` runs all, or only the named scripts.
Each benchmark is its own process with its own dev server, so one's leftovers
cannot skew the next. Benchmarks print figures; they do not assert timings.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: (script, arguments). The operator's benchmarks need the Kubernetes binaries that
#: ``hack/k8s-binaries`` builds; they run after the worker's.
BENCHMARKS: list[tuple[str, list[str]]] = [
    ("orchestration_overhead.py", []),
    ("throughput.py", []),
    ("temporal_cost.py", ["--runs", "20"]),
    ("resume_time.py", []),
    ("operator_bench.py", ["reconcile"]),
    ("operator_bench.py", ["scale"]),
    ("operator_bench.py", ["fleet"]),
]
#: The deep strategy's benchmarks (bench/deep_*.py), after the others.
BENCHMARKS += [
    ("deep_overhead.py", []),
    ("deep_throughput.py", []),
    ("deep_resume.py", []),
]


def main() -> int:
    failed = []
    only = set(sys.argv[1:])
    for name, args in BENCHMARKS:
        label = " ".join([name, *args])
        if only and name not in only and label not in only:
            continue
        if not (HERE / name).exists():
            continue
        print(f"== {label}", flush=True)
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / name), *args], cwd=HERE.parent)
        print(f"   ({time.monotonic() - t0:.0f}s, exit {code})\n", flush=True)
        if code != 0:
            failed.append(label)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
