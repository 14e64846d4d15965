"""Pictures of a run: learning curves from ``log.csv`` and slice overlays of a segmentation."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

__all__ = ["plot_learning_curves", "plot_overlay"]


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_learning_curves(log_csv: str | Path, png: str | Path) -> Path | None:
    """Training loss and validation Dice per epoch (from a run's ``log.csv``) as a PNG.

    Returns:
        the PNG path, or None when the log does not exist yet.
    """
    log_csv, png = Path(log_csv), Path(png)
    if not log_csv.exists():
        return None
    with log_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    plt = _figure()
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [int(r["epoch"]) for r in rows]
    ax_loss.plot(epochs, [float(r["train_loss"]) for r in rows], color="tab:red")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key in [k for k in rows[0] if k.startswith("val_dice_")]:
        pts = [(e, float(r[key])) for e, r in zip(epochs, rows) if r.get(key) not in (None, "")]
        if pts:
            ax_dice.plot(*zip(*pts), label=key.removeprefix("val_dice_"), lw=2.5 if key.endswith("mean") else 1.2)
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="validation Dice", ylim=(0, 1))
    if ax_dice.get_legend_handles_labels()[0]:
        ax_dice.legend(loc="lower right", fontsize=8)
    else:  # no validation split: say so on the picture rather than leave an empty axis unexplained
        ax_dice.text(0.5, 0.5, "no validation cases", ha="center", va="center", transform=ax_dice.transAxes)
    fig.tight_layout()
    out = _save(fig, png)
    plt.close(fig)
    return out


def plot_overlay(image: np.ndarray, reference: np.ndarray | None, prediction: np.ndarray, png: str | Path,
                 title: str = "") -> Path:
    """Three orthogonal slices through the prediction's centre of mass with label outlines.

    Args:
        image: ``(Z, Y, X)`` intensities (one channel).
        reference: ``(Z, Y, X)`` reference labels or None.
        prediction: ``(Z, Y, X)`` predicted labels.
    """
    plt = _figure()
    fg = np.argwhere(prediction > 0)
    if fg.size == 0 and reference is not None:
        fg = np.argwhere(reference > 0)
    centre = fg.mean(axis=0).astype(int) if fg.size else np.array(image.shape) // 2
    rows = [("reference", reference), ("prediction", prediction)] if reference is not None else [("prediction", prediction)]
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.4 * len(rows)), squeeze=False)
    for r, (name, lab) in enumerate(rows):
        for a in range(3):
            index = [slice(None)] * 3
            index[a] = int(centre[a])
            ax = axes[r, a]
            ax.imshow(image[tuple(index)], cmap="gray", origin="lower")
            masked = np.ma.masked_equal(lab[tuple(index)], 0)
            ax.imshow(masked, cmap="tab10", alpha=0.45, origin="lower", vmin=0, vmax=9, interpolation="nearest")
            ax.set_title(f"{name}, {'zyx'[a]}={centre[a]}", fontsize=9)
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = _save(fig, Path(png))
    plt.close(fig)
    return out
