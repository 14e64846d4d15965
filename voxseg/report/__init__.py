"""Pictures and reports of runs: learning curves, slice overlays, and one self-contained HTML page per run
or evaluation (``report.html``)."""
from voxseg.report.curves import plot_learning_curves, plot_overlay
from voxseg.report.html import REPORT_NAME, write_report

__all__ = ["REPORT_NAME", "plot_learning_curves", "plot_overlay", "write_report"]
