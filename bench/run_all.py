"""Run every CPU benchmark in bench/ one after another with its default (laptop-sized) settings.

    .venv/bin/python bench/run_all.py            # all of them (~16 min on 2 cores)
    .venv/bin/python bench/run_all.py sift dataset

Each script prints its own table of figures; this runner only sequences them and reports failures.
GPU figures come from ``bench/gpu_check.sh`` on a CUDA machine.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "phantom": ["bench_phantom.py"],
    "learnability": ["phantom_learnability.py"],
    "dataset": ["bench_dataset.py"],
    "resident": ["bench_resident.py"],
    "dicom": ["bench_dicom.py"],
    "scope": ["bench_scope.py"],
    "families": ["bench_families.py", "--device", "cpu"],
    "sift": ["bench_sift.py"],
    "search": ["bench_search.py"],
    "replay": ["bench_replay.py", "--quick"],
    "stats": ["bench_stats_validity.py", "--quick"],  # full mode (no --quick): ~50 min
}


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHES)
    unknown = [c for c in chosen if c not in BENCHES]
    if unknown:
        print(f"unknown bench(es) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        script, *args = BENCHES[name]
        print(f"\n##### {name}: {script} {' '.join(args)}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / script), *args])
        print(f"##### {name}: exit {rc} after {time.perf_counter() - t:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
