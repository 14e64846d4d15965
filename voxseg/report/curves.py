"""Pictures of a run: learning curves from ``log.csv`` and slice overlays of a segmentation."""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from voxseg.io.files import write_atomic

__all__ = ["dice_per_case_figure", "figure_png", "learning_curves_figure", "overlay_figure", "plot_learning_curves",
           "plot_overlay", "read_log", "slice_aspect"]


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards), for pages that embed their pictures."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)
    return buffer.getvalue()


def read_log(log_csv: str | Path) -> list[dict[str, str]]:
    """The rows of a run's ``log.csv`` (one per epoch) that are whole: an integer epoch and iteration count,
    numbers (or nothing) elsewhere. A line cut short by a killed run, or damaged, is left out rather than
    stopping a report of the rest. Empty when the log does not exist yet."""
    log_csv = Path(log_csv)
    if not log_csv.exists():
        return []
    with log_csv.open(newline="", errors="replace") as fh:
        return [row for row in csv.DictReader(fh) if _whole(row)]


def _whole(row: dict) -> bool:
    try:
        int(row["epoch"]), int(row["iterations"]), float(row["minutes"]), float(row["train_loss"])
        for key, value in row.items():
            if key is None or value is None:  # more fields than the header names, or fewer
                return False
            if value != "":
                float(value)
    except (KeyError, TypeError, ValueError):
        return False
    return True


def plot_learning_curves(log_csv: str | Path, png: str | Path) -> Path | None:
    """Training loss and validation Dice per epoch (from a run's ``log.csv``) as a PNG.

    Returns:
        the PNG path, or None when the log does not exist yet.
    """
    fig = learning_curves_figure(read_log(log_csv))
    if fig is None:
        return None
    out = _save(fig, Path(png))
    _figure().close(fig)
    return out


def learning_curves_figure(rows: list[dict[str, str]]):
    """The learning-curve figure of ``log.csv`` rows (see :func:`read_log`); None without rows."""
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
    return fig


def plot_overlay(image: np.ndarray, reference: np.ndarray | None, prediction: np.ndarray, png: str | Path,
                 title: str = "", label_names: Mapping[int, str] | None = None,
                 spacing: Sequence[float] | None = None) -> Path:
    """Three orthogonal slices through the centre of the reference's foreground (the prediction's when
    there is no reference or it is empty) with the labels laid over them, and a legend of the label colours.

    Args:
        image: ``(Z, Y, X)`` intensities (one channel).
        reference: ``(Z, Y, X)`` reference labels or None.
        prediction: ``(Z, Y, X)`` predicted labels.
        label_names: label value -> name for the legend (default: the values).
        spacing: ``(sz, sy, sx)`` mm: each slice is drawn with its voxels' true proportions
            (:func:`slice_aspect`); None: square voxels.
    """
    fig = overlay_figure(image, reference, prediction, title, label_names, spacing)
    out = _save(fig, Path(png))
    _figure().close(fig)
    return out


def slice_aspect(spacing: Sequence[float] | None, axis: int) -> float:
    """The ``imshow`` aspect (height / width of one pixel) of a slice of a ``(Z, Y, X)`` volume taken across
    ``axis``: the spacing of the slice's rows over that of its columns, so that e.g. 1.5 mm slices seen from
    the side are drawn 1.5 times as tall as 1 mm voxels, not squashed. ``spacing``: ``(sz, sy, sx)`` mm;
    None: 1 (square voxels)."""
    if spacing is None:
        return 1.0
    rows, cols = [float(spacing[k]) for k in range(3) if k != axis]
    return rows / cols


def overlay_figure(image: np.ndarray, reference: np.ndarray | None, prediction: np.ndarray, title: str = "",
                   label_names: Mapping[int, str] | None = None, spacing: Sequence[float] | None = None):
    """The figure of :func:`plot_overlay` (not saved); each slice drawn with :func:`slice_aspect`."""
    plt = _figure()
    fg = np.argwhere(reference > 0) if reference is not None else np.empty((0, 3))
    if fg.size == 0:  # nothing to find, or no reference: show where the prediction put its labels
        fg = np.argwhere(prediction > 0)
    centre = fg.mean(axis=0).astype(int) if fg.size else np.array(image.shape) // 2
    rows = [("reference", reference), ("prediction", prediction)] if reference is not None else [("prediction", prediction)]
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.4 * len(rows)), squeeze=False)
    for r, (name, lab) in enumerate(rows):
        for a in range(3):
            index = [slice(None)] * 3
            index[a] = int(centre[a])
            ax = axes[r, a]
            aspect = slice_aspect(spacing, a)
            ax.imshow(image[tuple(index)], cmap="gray", origin="lower", aspect=aspect)
            masked = np.ma.masked_equal(lab[tuple(index)], 0)
            ax.imshow(masked, cmap="tab10", alpha=0.45, origin="lower", vmin=0, vmax=9, interpolation="nearest",
                      aspect=aspect)
            ax.set_title(f"{name}, {'zyx'[a]}={centre[a]}", fontsize=9)
            ax.axis("off")
    found = set(np.unique(prediction).tolist()) | (set(np.unique(reference).tolist()) if reference is not None else set())
    values = sorted(found - {0})
    if values:  # the colours tab10 gives each value in the overlays (value v -> colour min(v, 9), as vmin=0, vmax=9)
        from matplotlib.patches import Patch

        names = label_names or {}
        handles = [Patch(color=plt.get_cmap("tab10")(min(int(v), 9)), alpha=0.6,
                         label=f"{v} {names.get(int(v), '')}".strip()) for v in values]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 if values else 0, 1, 1))
    return fig


def dice_per_case_figure(rows, structures):
    """Box plot of the Dice of every case per structure, each case also drawn as a point.

    Args:
        rows: metric rows (``case_id``, ``structure``, ``dice``), as in ``metrics_per_case.csv``.
        structures: the structures to draw, in order.
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(structures), 3.4))
    values = [[float(r["dice"]) for r in rows if r["structure"] == s and np.isfinite(float(r.get("dice", np.nan)))]
              for s in structures]
    ax.boxplot(values, showfliers=False)
    ax.set_xticks(range(1, len(structures) + 1), structures)
    for k, vals in enumerate(values, start=1):  # with few cases a box alone misleads: show the points too
        jitter = np.random.default_rng(k).uniform(-0.12, 0.12, len(vals))
        ax.scatter(np.full(len(vals), k) + jitter, vals, s=12, alpha=0.7, color="tab:blue")
    ax.set(ylabel="Dice", ylim=(0, 1.02), title="Dice per case")
    fig.tight_layout()
    return fig
