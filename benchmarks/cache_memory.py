"""Memory held by a training process for its cases: the memory-mapped cache against holding them in RAM.

Makes a phantom dataset (default 24 cases of 4 x 128x160x128, 0.65 GiB once cropped), preprocesses
it once into a cache, then in a fresh process per variant: loads the cases (``prepare_cases`` from the
cache) and draws 400 training patches of 64^3 across them. Reports the peak of anonymous resident memory
(``RssAnon``: memory that only swap can take back, what runs a machine out of memory); pages of a
memory-mapped file are page cache, which the kernel reclaims under pressure.

``mmap``: voxseg's cache as it is. ``ram``: every case copied into memory (what voxseg did before the
cache was memory-mapped, and what a dataset larger than RAM cannot do).

The held cases grow with the dataset, the mapped ones do not. Current figures: docs/benchmarks.md.

Usage: ``python benchmarks/cache_memory.py [--cases 24]``; last line JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import save_result

_CHILD = r"""
import json, sys, threading, time
import numpy as np
from voxseg.data import LabelMapping, PatchSampler, PreprocessConfig
from voxseg.io import load_dataset
from voxseg.runs import prepare_cases

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

peak, stop = [anon()], [False]
def watch():
    while not stop[0]:
        peak[0] = max(peak[0], anon()); time.sleep(0.005)
threading.Thread(target=watch, daemon=True).start()
base = anon()
t0 = time.perf_counter()
cases = prepare_cases(load_dataset(sys.argv[1]).cases, PreprocessConfig(), LabelMapping([0, 1, 2, 4]),
                      __import__("pathlib").Path(sys.argv[2]), progress=False)
if sys.argv[3] == "ram":
    for c in cases:
        c.image, c.label = np.array(c.image), np.array(c.label)
rng = np.random.default_rng(0)
samplers = [PatchSampler(c.image, c.label, (64, 64, 64), rng=rng) for c in cases]
for i in range(400):
    samplers[int(rng.integers(len(samplers)))].sample(force_foreground=i % 3 == 0, rng=rng)
seconds = time.perf_counter() - t0
stop[0] = True
time.sleep(0.02)
size = sum(c.image.nbytes + c.label.nbytes for c in cases)
print(json.dumps({"peak_anon": peak[0] - base, "dataset": size, "seconds": seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    args = parser.parse_args()
    from voxseg.data import LabelMapping, PreprocessConfig, make_phantom_dataset
    from voxseg.io import load_dataset
    from voxseg.runs import prepare_cases

    with tempfile.TemporaryDirectory() as tmp:
        data = make_phantom_dataset(Path(tmp) / "ds", n_cases=args.cases, shape=(128, 160, 128), seed=0)
        cache = Path(tmp) / "cache"
        prepare_cases(load_dataset(data).cases, PreprocessConfig(), LabelMapping([0, 1, 2, 4]), cache)
        rows = {}
        print(f"{'variant':<8}  {'dataset GiB':>11}  {'peak anon GiB':>13}  {'seconds':>7}")
        for variant in ("mmap", "ram"):
            proc = subprocess.run([sys.executable, "-c", _CHILD, str(data), str(cache), variant],
                                  capture_output=True, text=True, check=True)
            rows[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = rows[variant]
            print(f"{variant:<8}  {r['dataset'] / 2**30:>11.2f}  {r['peak_anon'] / 2**30:>13.2f}  {r['seconds']:>7.1f}")
    figures = {"cases": args.cases, "dataset_gib": rows["mmap"]["dataset"] / 2**30,
               "peak_anon_gib_mmap": rows["mmap"]["peak_anon"] / 2**30,
               "peak_anon_gib_ram": rows["ram"]["peak_anon"] / 2**30,
               "seconds_mmap": rows["mmap"]["seconds"], "seconds_ram": rows["ram"]["seconds"]}
    print(json.dumps(figures))
    save_result("cache_memory", figures, sys.argv)


if __name__ == "__main__":
    main()
