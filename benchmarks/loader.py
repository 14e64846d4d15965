"""Data-feeding benchmark: voxseg's augmentation against the equivalent MONAI chain, and how long a real
training step waits for PatchLoader batches.

For a BraTS 2018 case (4 channels, 128x128x128 patches) and hippocampus cases (40x56x40 patches):

1. seconds per augmented sample (patch placement with 1/3 foreground + the default augmentation),
   voxseg vs MONAI measured in the same run on 1 thread each (as in a loader worker): medians over
   ``--repeats`` blocks of ``--samples`` samples, each block timed as a whole. The chains match in
   probabilities: flips 0.5 per axis, axial rot90 0.2, rotation 0.2 + scaling 0.2 (MONAI: one
   RandAffined with p = 1 - 0.8^2 = 0.36, the chance that either fires), elastic 0.2
   (MONAI sigma 9-13, magnitude 0-900 = nnU-Net v1), channel scale 0.2, shift 0.2, noise 0.1,
   blur 0.2, gamma 0.3. voxseg's low-resolution simulation (no MONAI counterpart in the chain) is
   off for the comparison; its full default (with it) is printed too.
2. the fraction of a training step spent waiting for data: a voxseg 3-D U-Net
   (``build_network("unet", 3, C, K, base_width=16, depth=4)``) trains forward + backward on
   2 threads, consuming PatchLoader batches made by 1 worker process with the full default
   augmentation. On a machine with few cores the worker competes with the model's threads; that is measured,
   not hidden.

Usage:
    python benchmarks/loader.py [--data-root ../shared/data] [--repeats 5] [--steps 6]

The last line printed is a JSON object
``{"brats": {"speedup_vs_monai": x, "data_wait_fraction": y}, "hippocampus": {...}}``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _results import save_result

from voxseg.data.augment import AugmentConfig, build_augmentation
from voxseg.data.loader import PatchLoader
from voxseg.data.preprocess import nonzero_bbox
from voxseg.data.sampling import PatchSampler
from voxseg.io.image import read_volume
from voxseg.nets import build_network

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
BRATS_LABELS = {0: 0, 1: 1, 2: 2, 4: 3}


def _zscore(image: np.ndarray) -> np.ndarray:
    mask = (image != 0).any(axis=0)
    out = np.zeros_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        v = image[c][mask]
        out[c][mask] = (v - v.mean()) / max(float(v.std()), 1e-8)
    return out


def load_brats(root: Path, n_cases: int) -> list[tuple[np.ndarray, np.ndarray]]:
    cases = []
    for case in sorted(p for p in (root / "brats2018").iterdir() if p.is_dir())[:n_cases]:
        image = np.stack([read_volume(case / f"{case.name}_{m}.nii.gz")[0] for m in ("t1", "t1ce", "t2", "flair")])
        seg = read_volume(case / f"{case.name}_seg.nii.gz", dtype=None)[0].astype(np.int64)
        label = np.zeros(seg.shape, np.uint8)
        for raw, k in BRATS_LABELS.items():
            label[seg == raw] = k
        box = tuple(slice(a, b) for a, b in nonzero_bbox(image))
        cases.append((_zscore(image[(slice(None),) + box]), np.ascontiguousarray(label[box])))
    return cases


def load_hippocampus(root: Path, n_cases: int) -> list[tuple[np.ndarray, np.ndarray]]:
    cases = []
    for img_path in sorted((root / "hippocampus" / "images").glob("*.nii.gz")):
        lbl_path = root / "hippocampus" / "labels" / img_path.name
        if not lbl_path.exists():
            continue
        image = read_volume(img_path)[0][None]
        label = np.rint(read_volume(lbl_path)[0]).astype(np.uint8)
        cases.append((_zscore(image), label))
        if len(cases) == n_cases:
            break
    return cases


def monai_chain(patch: tuple[int, ...], cfg: AugmentConfig):
    """The MONAI dict chain with voxseg's default probabilities and matching ranges."""
    from monai import transforms as mt

    keys = ["image", "label"]
    p_affine = 1 - (1 - cfg.rotation.p) * (1 - cfg.scaling.p)
    rot = math.radians(cfg.rotation.angle[1])
    lo, hi = cfg.scaling.factor
    return mt.Compose([
        mt.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch, pos=1, neg=2, num_samples=1,
                                  fg_indices_key="fg", bg_indices_key="bg", allow_smaller=True),
        mt.SpatialPadd(keys, spatial_size=patch),
        *[mt.RandFlipd(keys, prob=cfg.flip.p, spatial_axis=a) for a in range(3)],
        mt.RandRotate90d(keys, prob=cfg.rot90.p, spatial_axes=(1, 2), max_k=3),
        mt.RandAffined(keys, prob=p_affine, rotate_range=(rot,) * 3, scale_range=((lo - 1, hi - 1),) * 3,
                       mode=("bilinear", "nearest"), padding_mode="zeros"),
        mt.Rand3DElasticd(keys, sigma_range=(9, 13), magnitude_range=(0, 900), prob=cfg.elastic.p,
                          mode=("bilinear", "nearest"), padding_mode="zeros"),
        mt.RandGaussianNoised("image", prob=cfg.noise.p, mean=0.0, std=cfg.noise.std[1]),
        mt.RandGaussianSmoothd("image", sigma_x=cfg.blur.sigma, sigma_y=cfg.blur.sigma, sigma_z=cfg.blur.sigma,
                               prob=cfg.blur.p),
        mt.RandScaleIntensityd("image", factors=cfg.intensity_scale.factor[1] - 1, prob=cfg.intensity_scale.p,
                               channel_wise=True),
        mt.RandShiftIntensityd("image", offsets=cfg.intensity_shift.offset[1], prob=cfg.intensity_shift.p,
                               channel_wise=True),
        mt.RandAdjustContrastd("image", prob=cfg.gamma.p, gamma=cfg.gamma.gamma, retain_stats=True),
    ])


def time_voxseg(cases, patch, cfg, samples, repeats, seed=0) -> float:
    """Median over blocks of seconds per sample: place a patch (1/3 foreground) and augment it."""
    aug = build_augmentation(cfg)
    samplers = [PatchSampler(img, lbl, patch, rng=np.random.default_rng(i)) for i, (img, lbl) in enumerate(cases)]
    blocks = []
    for r in range(-1, repeats):  # block -1 warms up (first-call overheads), untimed
        rng = np.random.default_rng([seed, r + 1])
        t0 = time.perf_counter()
        for i in range(samples if r >= 0 else min(samples, 3)):
            ci = int(rng.integers(len(cases)))
            start = samplers[ci].sample_start(i % 3 == 0, rng)
            centre = [s + (p - 1) / 2 for s, p in zip(start, patch)]
            aug.extract(cases[ci][0], cases[ci][1], centre, patch, rng)
        if r >= 0:
            blocks.append((time.perf_counter() - t0) / samples)
    return statistics.median(blocks)


def time_monai(cases, patch, cfg, samples, repeats, seed=0) -> float:
    from monai.data import set_track_meta
    from monai.transforms import FgBgToIndicesd

    set_track_meta(False)  # plain tensors: MONAI's fastest mode
    chain = monai_chain(patch, cfg)
    index = FgBgToIndicesd("label")
    # Foreground / background indices once per case, as a cached MONAI pipeline would.
    data = [index({"image": torch.from_numpy(img), "label": torch.from_numpy(lbl[None].astype(np.float32))})
            for img, lbl in cases]
    blocks = []
    for r in range(-1, repeats):  # block -1 warms up, untimed
        chain.set_random_state(seed=seed * 1000 + r + 1)
        rng = np.random.default_rng([seed, r + 1])
        t0 = time.perf_counter()
        for _ in range(samples if r >= 0 else min(samples, 3)):
            d = data[int(rng.integers(len(data)))]
            chain(dict(d))
        if r >= 0:
            blocks.append((time.perf_counter() - t0) / samples)
    return statistics.median(blocks)


def data_wait(cases, patch, n_classes, steps, batch_size, model_threads, seed=0) -> tuple[float, float, float]:
    """``(fraction of step time waiting for data, seconds per step with the loader, seconds per step of
    the model alone on a fixed batch)`` for a real training step."""
    loader = PatchLoader(cases, patch, batch_size, augment=build_augmentation(AugmentConfig()), num_workers=1,
                         prefetch=2, seed=seed)
    with loader:
        x, y = next(loader)  # forks the worker before the model touches torch's thread pool
        torch.set_num_threads(model_threads)
        torch.manual_seed(seed)
        model = build_network("unet", 3, x.shape[1], n_classes, base_width=16, depth=4)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step(x, y):
            out = model(torch.from_numpy(x))
            out = out[0] if isinstance(out, (list, tuple)) else out
            loss = loss_fn(out, torch.from_numpy(y.astype(np.int64)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step(x, y)  # warm-up (allocator, first-call overheads)
        # Model alone: the worker's prefetch slots are full by now, so it sits idle.
        n_alone = max(1, min(steps, 3))
        t0 = time.perf_counter()
        for _ in range(n_alone):
            step(x, y)
        alone = (time.perf_counter() - t0) / n_alone
        wait0, t0 = loader.wait_seconds, time.perf_counter()
        for _ in range(steps):
            x, y = next(loader)
            step(x, y)
        total = time.perf_counter() - t0
        return (loader.wait_seconds - wait0) / total, total / steps, alone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per measurement (median taken)")
    parser.add_argument("--brats-samples", type=int, default=10, help="samples per block, BraTS")
    parser.add_argument("--hippo-samples", type=int, default=100, help="samples per block, hippocampus")
    parser.add_argument("--brats-steps", type=int, default=6, help="timed training steps, BraTS")
    parser.add_argument("--hippo-steps", type=int, default=40, help="timed training steps, hippocampus")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--model-threads", type=int, default=2)
    parser.add_argument("--datasets", default="brats,hippocampus", help="comma-separated subset to run")
    args = parser.parse_args()
    if not (args.data_root / "brats2018").exists() or not (args.data_root / "hippocampus").exists():
        print(f"error: {args.data_root}: brats2018/ or hippocampus/ not found (see ../shared/data/README.md)",
              file=sys.stderr)
        return 2

    matched = AugmentConfig().replace(low_resolution=0)  # transforms the MONAI chain has
    setups = {
        "brats": (lambda: load_brats(args.data_root, 2), (128, 128, 128), 4, args.brats_samples, args.brats_steps),
        "hippocampus": (lambda: load_hippocampus(args.data_root, 20), (40, 56, 40), 3, args.hippo_samples,
                        args.hippo_steps),
    }
    rows, result = [], {}
    for name in args.datasets.split(","):
        load, patch, n_classes, samples, steps = setups[name]
        cases = load()
        print(f"{name}: {len(cases)} cases, volume {cases[0][0].shape}, patch {patch}", flush=True)
        torch.set_num_threads(1)  # augmentation runs on one core, as in a loader worker
        t_vox = time_voxseg(cases, patch, matched, samples, args.repeats)
        t_vox_full = time_voxseg(cases, patch, AugmentConfig(), samples, args.repeats)
        t_monai = time_monai(cases, patch, matched, samples, args.repeats)
        wait, step_s, alone_s = data_wait(cases, patch, n_classes, steps, args.batch_size, args.model_threads)
        torch.set_num_threads(1)
        rows.append((name, t_vox, t_vox_full, t_monai, t_monai / t_vox, alone_s, step_s, wait))
        result[name] = {"speedup_vs_monai": round(t_monai / t_vox, 2), "data_wait_fraction": round(wait, 4)}
        print(f"  voxseg {t_vox * 1e3:.1f} ms/sample (full default {t_vox_full * 1e3:.1f}), MONAI "
              f"{t_monai * 1e3:.1f} ms/sample, step {step_s:.2f} s (model alone {alone_s:.2f} s), wait {wait:.1%}",
              flush=True)

    print()
    print(f"medians of {args.repeats} blocks; augmentation on 1 thread; training step: batch {args.batch_size}, "
          f"{args.model_threads} model threads, 1 loader worker")
    header = ("dataset", "voxseg s/sample", "voxseg full default", "MONAI s/sample", "speedup",
              "step s (model alone)", "step s (with loader)", "data wait")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, tv, tvf, tm, sp, alone, st, w in rows:
        print(f"| {name} | {tv:.4f} | {tvf:.4f} | {tm:.4f} | {sp:.1f}x | {alone:.2f} | {st:.2f} | {w:.1%} |")
    print(json.dumps(result))
    save_result("loader", result, sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
