"""Pictures and reports of runs (learning curves, slice overlays)."""
from voxseg.report.curves import plot_learning_curves, plot_overlay

__all__ = ["plot_learning_curves", "plot_overlay"]
