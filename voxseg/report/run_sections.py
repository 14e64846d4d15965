"""The run's sections of the report: plan, data (split and fingerprint), training curves per model,
post-processing, and the out-of-fold evaluation when the run has one."""
from __future__ import annotations

import html
import json
from pathlib import Path

from voxseg.config import RunPlan
from voxseg.data import FINGERPRINT_NAME
from voxseg.errors import InputError
from voxseg.metrics.evaluate import JSON_NAME
from voxseg.report.curves import figure_png, learning_curves_figure, read_log
from voxseg.report.evaluation_sections import evaluation_body
from voxseg.report.html_parts import _picture, _read_json, _table, _text

__all__ = ["run_sections"]


def run_sections(run_dir: Path) -> tuple[list[tuple[str, str, str]], dict[int, str]]:
    """The run's sections, and its label names (value -> name) for the pictures' legends."""
    plan_path = run_dir / "plan.json"
    if not plan_path.exists():
        raise InputError(run_dir, "not a voxseg run folder (no plan.json)")
    plan = RunPlan.load(plan_path)  # an unreadable one is an InputError naming it
    sections = [("plan", "Plan", _plan_body(plan, run_dir)), ("data", "Data", _data_body(run_dir))]
    models = sorted(run_dir.glob("fold_*/log.csv")) or [run_dir / "log.csv"]
    sections.append(("training", "Training", "".join(_training_body(log.parent, len(models) > 1) for log in models)))
    postprocessing = run_dir / "postprocessing.json"
    if postprocessing.exists():
        sections.append(("postprocessing", "Post-processing", _postprocessing_body(postprocessing)))
    names = {int(v): n for v, n in plan.label_names.items() if int(v) != 0}
    if (run_dir / "oof" / JSON_NAME).exists():
        sections.append(("oof", "Out-of-fold evaluation", evaluation_body(run_dir / "oof", names)))
    return sections, names


def _parameters(plan: RunPlan) -> int | None:
    from voxseg.nets import build_model
    from voxseg.nets import count_parameters

    try:
        return count_parameters(build_model(plan))
    except (ValueError, KeyError, TypeError, RuntimeError):  # a plan of another version: the page still helps
        return None


def _plan_body(plan: RunPlan, run_dir: Path) -> str:
    pre, net, train = plan.preprocess, plan.network, plan.train
    labels = ", ".join(f"{v} {plan.label_names.get(str(v), '')}".strip() for v in plan.label_values)
    scheme = plan.label_scheme
    if plan.scheme.is_region_based:
        scheme += " (sigmoid: " + ", ".join(f"{name} = {{{', '.join(map(str, values))}}}"
                                            for name, values in plan.scheme.regions.items()) + ")"
    steps = [f"voxel order {pre.orientation} (every scan flipped / permuted to it)" if pre.orientation else
             "each file's own voxel order",
             "crop to the nonzero box" if pre.crop_to_nonzero else "no crop",
             f"normalisation {pre.normalization}" + (
                 f" (clip to {pre.ct_window[0]:g}..{pre.ct_window[1]:g} HU" + (
                     f", minus {pre.ct_mean:g}, over {pre.ct_std:g})" if pre.ct_mean is not None and pre.ct_std
                     else ")") if pre.normalization == "ct" and pre.ct_window else ""),
             f"resampled to {' x '.join(f'{s:g}' for s in pre.target_spacing)} mm" if pre.target_spacing else
             "no resampling"]
    steps += ["N4 bias-field correction"] if pre.n4 else []
    steps += [f"{pre.denoise} anisotropic diffusion"] if pre.denoise else []
    augment = [name for name, values in plan.augment.to_dict().items() if isinstance(values, dict) and values.get("p")]
    n_params = _parameters(plan)
    budget = f"{train.epochs} epochs x {train.iterations_per_epoch} iterations" + (
        f", at most {train.time_budget_minutes:g} minutes" if train.time_budget_minutes else "")
    rows = [
        ("run folder", str(run_dir.resolve())),
        ("dataset", plan.dataset or "–"),
        ("channels", ", ".join(plan.channel_names) + (f" (trained on {', '.join(train.channels)})"
                                                       if train.channels else "")),
        ("labels", labels),
        ("label scheme", scheme),
        ("preprocessing", ", ".join(steps)),
        ("network", f"{net.name}, {net.spatial_dims}-D, {json.dumps(net.kwargs)}"
                    + (f", {n_params / 1e6:.2f} M parameters" if n_params else "")),
        ("patch, batch", f"{' x '.join(map(str, train.patch_size))} voxels ({train.mode}), batch {train.batch_size}"),
        ("loss", train.loss + (f" {json.dumps(train.loss_kwargs)}" if train.loss_kwargs else "")),
        ("optimiser", f"{train.optimizer}, learning rate {_text(train.lr)}, schedule {train.schedule}"),
        ("budget", budget),
        ("augmentation", ", ".join(augment) or "none"),
        ("mixed precision", train.amp),
        ("seed", train.seed),
        ("sliding window", f"overlap {plan.inference.overlap:g}, "
                           f"{'Gaussian' if plan.inference.gaussian else 'uniform'} weighting"),
    ]
    return _table(rows) + '<p class="note">Everything is in plan.json beside the checkpoints.</p>\n'


def _data_body(run_dir: Path) -> str:
    parts = []
    for name in ("split.json", "splits.json"):
        if (run_dir / name).exists():
            split = _read_json(run_dir / name)
            folds = split if isinstance(split, list) else [split]
            rows = [(f"fold {k}" if len(folds) > 1 else "split", len(s.get("train", [])), len(s.get("val", [])),
                     ", ".join(s.get("val", [])[:12]) + (" ..." if len(s.get("val", [])) > 12 else ""))
                    for k, s in enumerate(folds)]
            parts.append(_table(rows, ("", "training cases", "validation cases", "validation case ids")))
    fingerprint = run_dir / FINGERPRINT_NAME
    if fingerprint.exists():
        fp = _read_json(fingerprint)

        def _axes(values, unit):
            return " x ".join(f"{v:g}" for v in values) + f" {unit}" if values else "–"

        rows = [("cases", fp.get("n_cases")),
                ("spacing (z, y, x) median", _axes(fp.get("spacing_median"), "mm")),
                ("spacing min / max", f"{_axes(fp.get('spacing_min'), 'mm')} / {_axes(fp.get('spacing_max'), 'mm')}"),
                ("shape median", _axes(fp.get("shape_median"), "voxels")),
                ("shape min / max", f"{_axes(fp.get('shape_min'), 'voxels')} / {_axes(fp.get('shape_max'), 'voxels')}")]
        parts.append(_table(rows))
    return "".join(parts) or '<p class="note">No split.json or fingerprint.json in the run folder.</p>\n'


def _training_body(model_dir: Path, show_name: bool) -> str:
    heading = f"<h3>{html.escape(model_dir.name)}</h3>\n" if show_name else ""
    rows = read_log(model_dir / "log.csv")
    if not rows:
        return heading + '<p class="note">No epoch finished yet (log.csv is empty or missing).</p>\n'
    last = rows[-1]
    facts: list[tuple[str, object]] = [("epochs", int(last["epoch"])), ("iterations", int(last["iterations"])),
                                       ("minutes", float(last["minutes"])),
                                       ("last training loss", float(last["train_loss"]))]
    validated = [r for r in rows if r.get("val_dice_mean") not in (None, "")]
    if validated:
        best = max(validated, key=lambda r: float(r["val_dice_mean"]))
        facts += [("best validation Dice (mean)", float(best["val_dice_mean"])), ("at epoch", int(best["epoch"])),
                  ("last validation Dice (mean)", float(validated[-1]["val_dice_mean"]))]
        facts += [(f"best-epoch validation Dice {k.removeprefix('val_dice_')}", float(best[k]))
                  for k in best if k.startswith("val_dice_") and k != "val_dice_mean" and best[k] not in (None, "")]
    else:
        facts.append(("validation", "none (no validation cases): the last weights are used"))
    checkpoints = [f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in sorted(model_dir.glob("checkpoint_*.pt"))]
    facts.append(("checkpoints", ", ".join(checkpoints) or "none yet"))
    return heading + _table(facts) + _picture(figure_png(learning_curves_figure(rows)), "learning curves")


def _postprocessing_body(path: Path) -> str:
    data = _read_json(path)
    rows = [(r.get("description", ""), r.get("mean_before"), r.get("mean_after"), "kept" if r.get("kept") else "dropped")
            for r in data.get("selection", [])]
    text = _table(rows, ("rule", "mean Dice before", "after", "")) if rows else ""
    return text + f'<p class="note">{html.escape(str(data.get("criterion", "")))}</p>\n'
