"""Training memory: voxseg's estimate against the measured peak of real training steps.

Each configuration runs in its own process (2 threads): build a 3-D U-Net, take three SGD steps with
Dice + CE on random data at the patch and batch, and report the growth of peak resident memory over
the process's resident memory just before (torch, voxseg, model and data already loaded). The estimate
is ``voxseg.plan.memory.estimate_training_memory`` without its fixed framework term, which the
baseline already holds.

It prints one row per configuration (base width, patch, batch, deep supervision, measured GiB, estimate GiB,
estimate / measured). The peak of one process varies by about 10% from run to run, so read a ratio near 1 as
"within noise". Narrow networks (base width 4-8) need more than the estimate: with few channels the CPU
backend picks convolution algorithms with large scratch buffers that no saved tensor shows; they need
little memory in absolute terms, and the default budget keeps 20% of the free memory aside. Current figures:
docs/benchmarks.md.

Usage: ``python benchmarks/memory_plan.py``
"""
from __future__ import annotations

import json
import subprocess
import sys

from _results import save_result

CONFIGS = [  # (base width, cubic patch side, batch, deep supervision)
    (4, 64, 2, True),
    (8, 64, 2, True),
    (8, 96, 2, True),
    (16, 64, 2, True),
    (16, 96, 2, True),
    (32, 64, 2, False),
    (32, 96, 1, False),
    (16, 128, 1, True),
]

_CHILD = r"""
import json, resource, sys
import torch
from voxseg.losses import build_loss
from voxseg.nets import build_network
from voxseg.plan.memory import estimate_training_memory

base, side, batch, ds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
torch.set_num_threads(2)
torch.manual_seed(0)
model = build_network("unet", 3, 4, 4, base_width=base, depth=5, deep_supervision=ds).train()
estimate = estimate_training_memory(model, (4, side, side, side), batch, "sgd", "cpu")
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True)
x = torch.randn(batch, 4, side, side, side)
y = torch.randint(0, 4, (batch, 1, side, side, side))
loss_fn = build_loss("dice+ce", mode="softmax")
with open("/proc/self/statm") as f:
    before = int(f.read().split()[1]) * resource.getpagesize()
for _ in range(3):
    opt.zero_grad(set_to_none=True)
    out = model(x)
    loss = loss_fn(out[0] if isinstance(out, (list, tuple)) else out, y)
    loss.backward()
    opt.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"measured": peak - before, "estimate": estimate.activations + estimate.parameters}))
"""


def main() -> None:
    rows = []
    for base, side, batch, ds in CONFIGS:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(base), str(side), str(batch), str(int(ds))],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"base": base, "patch": side, "batch": batch, "deep_supervision": ds,
                     "measured_gib": r["measured"] / 2**30, "estimate_gib": r["estimate"] / 2**30,
                     "ratio": r["estimate"] / r["measured"]})
        print(f"{base:>4}  {side:>5}  {batch:>5}  {int(ds):>2}  {rows[-1]['measured_gib']:>12.2f}  "
              f"{rows[-1]['estimate_gib']:>12.2f}  {rows[-1]['ratio']:>17.2f}", flush=True)
    ratios = [r["ratio"] for r in rows]
    figures = {"min_estimate_over_measured": round(min(ratios), 3),
               "max_estimate_over_measured": round(max(ratios), 3), "rows": rows}
    print(json.dumps(figures))
    save_result("memory_plan", figures, sys.argv)


if __name__ == "__main__":
    print("base  patch  batch  ds  measured GiB  estimate GiB  estimate/measured")
    main()
