"""Command line: parses, calls one function per command, prints. Bad input -> one line, exit code 2."""
from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import click

from voxseg.errors import InputError, InputProblems

__all__ = ["main", "user_errors"]


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. predictions without a reference) as one ``warning:`` line, not a source listing;
    through tqdm so that a progress bar being drawn is not cut in two."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def user_errors(func):
    """Turn bad input into one line per problem on stderr and exit code 2 (no traceback); the commands
    here and the scripts under benchmarks/ use it."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                return func(*args, **kwargs)
        except InputError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except InputProblems as err:
            for line in err.problems:
                click.echo(f"error: {line}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished files were kept, nothing half-written was left", err=True)
            sys.exit(130)
        except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
            if not _out_of_memory(err):
                raise
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            click.echo(f"error: out of memory ({detail}); train: give --memory GIB (what this machine can spare) "
                       "and voxseg plans a patch and batch that fit, or set a smaller --patch / --batch-size",
                       err=True)
            sys.exit(2)

    return wrapper


def _out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in text or "out of memory" in text.lower())


def _parse_kv(text: str | None) -> dict:
    """``"alpha=0.3,beta=0.7,name=x"`` -> ``{"alpha": 0.3, "beta": 0.7, "name": "x"}``; a value may be a JSON
    list (``"strides=[[1,2,2],[2,2,2]]"``: commas inside brackets do not separate items)."""
    from voxseg.losses import split_top_level

    out: dict = {}
    for item in split_top_level(text or ""):
        if "=" not in item:
            raise ValueError(f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            if value.strip()[:1] in ("[", "("):
                raise ValueError(f"{key.strip()}={value.strip()} is not a list; write one as JSON, e.g. "
                                 "[[1,2,2],[2,2,2]]") from None
            out[key.strip()] = value.strip()
    return out


def _parse_ints(text: str | None) -> list[int] | None:
    """``"64x64x64"`` or ``"64,64,64"`` -> ``[64, 64, 64]`` (positive integers)."""
    if not text:
        return None
    try:
        values = [int(v) for v in text.lower().replace("x", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ValueError(f"expected positive integers such as 64x64x64, got {text!r}")
    return values


def _parse_floats(text: str | None) -> tuple[float, ...] | None:
    """``"1,1,1.5"`` or ``"1x1x1.5"`` -> ``(1.0, 1.0, 1.5)`` (positive numbers)."""
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.lower().replace("x", ",").split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"expected positive numbers such as 1,1,1.5, got {text!r}")
    return values


def _parse_window(text: str | None) -> tuple[float, float] | None:
    """``"-100,200"`` -> ``(-100.0, 200.0)`` (two numbers, low < high)."""
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if len(values) != 2 or not values[0] < values[1]:
        raise ValueError(f"expected LO,HI with LO < HI, such as -100,200, got {text!r}")
    return values


def _parsed(flag: str, parse, text, count: int | None = None):
    """``parse(text)``, with a malformed value reported as a usage error naming ``flag`` (exit 2)."""
    try:
        value = parse(text)
    except KeyError as exc:
        raise click.BadParameter(f"unknown key {exc}", param_hint=f"'{flag}'") from None
    except (ValueError, TypeError) as exc:  # json errors are ValueErrors
        raise click.BadParameter(str(exc), param_hint=f"'{flag}'") from None
    if count is not None and value is not None and len(value) != count:
        raise click.BadParameter(f"expected {count} values (Z, Y, X), got {text!r}", param_hint=f"'{flag}'")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="voxseg")
def main() -> None:
    """voxseg: train, run and evaluate U-Net segmentation of 3D scans on a CPU, a GPU or a cluster."""


@main.command()
@click.argument("data", type=click.Path(path_type=Path))
@user_errors
def validate(data: Path) -> None:
    """Check every case of DATA; print a table and one line per problem (exit 2 if any)."""
    from voxseg.io.datasets import load_dataset
    from voxseg.io.validate import format_table, validate_dataset

    dataset = load_dataset(data)
    allowed = set(int(v) for v in dataset.label_names) if dataset.label_names else None
    report = validate_dataset(dataset, allowed_labels=allowed, progress=True)
    click.echo(f"layout: {dataset.layout}; channels (in this order): {', '.join(dataset.channel_names)}")
    click.echo(format_table(report, with_problems=False))
    if report.problems:
        for problem in report.problems:
            click.echo(f"error: {problem}", err=True)
        click.echo(f"{len(report.problems)} problem(s) in {len({p.case_id for p in report.problems})} case(s)",
                   err=True)
        sys.exit(2)
    if n := report.background_only():
        click.echo(f"warning: the label maps of all {n} case(s) hold only background (0): nothing to train on "
                   "(voxseg train refuses this dataset)", err=True)
    orders = report.orientations()
    if len(orders) > 1:  # valid, and handled by train, but worth knowing
        majority, *others = orders
        listed = "; ".join(f"{code}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
                           for code, ids in orders.items() if code != majority)
        click.echo(f"note: the cases are stored in {len(orders)} voxel orders, {majority} for {len(orders[majority])} "
                   f"of them, others {listed}; voxseg train flips / permutes every scan to {majority} exactly "
                   "(--orientation to choose another)")
    click.echo(f"ok: {len(dataset.cases)} cases, no problems")


def _exclusions(text: str | None) -> list[str] | None:
    """Case ids from ``a,b,c`` or from a ``flagged_cases.json`` written by ``--flag-hard-cases``."""
    if not text:
        return None
    if text.endswith(".json"):
        path = Path(text)
        if not path.exists():
            raise InputError(path, "file not found")
        document = json.loads(path.read_text())
        flagged = document.get("flagged") if isinstance(document, dict) else None
        if not isinstance(flagged, list):
            raise ValueError(f"{path}: not a flagged_cases.json (no 'flagged' list of case ids)")
        return [str(c) for c in flagged]
    return [c for c in text.split(",") if c]


def _train_options(**kw):
    from voxseg.data.preprocess import PreprocessConfig
    from voxseg.losses import parse_loss_args
    from voxseg.config import augmentation_preset
    from voxseg.runs import TrainOptions, checked_patch_size

    if kw["fold"] != "all" and not kw["folds"]:
        raise click.BadParameter("--fold picks a fold of a cross-validation: give --folds K too", param_hint="'--fold'")
    mode = kw["mode"] or ("2d" if kw["dims"] == 2 else "3d")
    dims = 2 if mode in ("2d", "2.5d") else kw["dims"]
    try:
        patch = checked_patch_size(_parsed("--patch", _parse_ints, kw["patch"]), dims)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--patch: "), param_hint="'--patch'") from None
    if kw["ct_window"] and kw["normalization"] not in (None, "ct"):
        raise click.BadParameter(f"clips CT intensities: it goes with --normalization ct, not {kw['normalization']}",
                                 param_hint="'--ct-window'")
    augment = _parsed("--augment-args", lambda t: augmentation_preset(kw["augment"]).replace(**_parse_kv(t)),
                      kw["augment_args"])
    pre = PreprocessConfig(normalization=kw["normalization"] or "zscore", n4=kw["n4"], denoise=kw["denoise"],
                           ct_window=_parsed("--ct-window", _parse_window, kw["ct_window"]),
                           target_spacing=None if str(kw["spacing"]).lower() in ("auto", "none") else
                           _parsed("--spacing", _parse_floats, kw["spacing"], count=3))
    timing = {} if kw["min_iterations"] is None else {"min_iterations": kw["min_iterations"]}
    return TrainOptions(
        **timing, net=kw["net"], net_kwargs=_parsed("--net-args", _parse_kv, kw["net_args"]), spatial_dims=dims, loss=kw["loss"], augment=augment,
        resample="auto" if str(kw["spacing"]).lower() == "auto" else "none",
        loss_kwargs=_parsed("--loss-args", parse_loss_args, kw["loss_args"]), label_scheme=kw["label_scheme"], memory_gib=kw["memory_gib"], epochs=kw["epochs"],
        iterations_per_epoch=kw["iterations"], time_budget_minutes=kw["time_budget"], batch_size=kw["batch_size"],
        lr=kw["lr"], optimizer=kw["optimizer"], seed=kw["seed"], amp=kw["amp"], patch_size=patch,
        val_fraction=kw["val_fraction"], preprocess=pre, orientation=kw["orientation"], normalization=kw["normalization"], skip_invalid=kw["skip_invalid"], num_threads=kw["threads"],
        folds=kw["folds"], fold=kw["fold"], init_from=str(kw["init_from"]) if kw["init_from"] else None,
        freeze_stages=kw["freeze_stages"], unfreeze_after_epochs=kw["unfreeze_after"], val_every=kw["val_every"],
        train_overrides={"optimizer_kwargs": _parsed("--optimizer-args", _parse_kv, kw["optimizer_args"]), "schedule": kw["schedule"],
                         "schedule_kwargs": _parsed("--schedule-args", _parse_kv, kw["schedule_args"]), "plateau_patience": kw["plateau"],
                         "early_stopping_patience": kw["early_stopping"], "swa_epochs": kw["swa_epochs"],
                         "grad_clip": kw["grad_clip"] or None, "mode": mode, "slices": kw["slices"],
                         "slice_selection": kw["slice_selection"], "loader_workers": kw["loader_workers"],
                         "channels": kw["channels"].split(",") if kw["channels"] else None,
                         "flag_cases": kw["flag_hard_cases"], "minicube": _parsed("--minicubes", _parse_ints, kw["minicubes"], count=3),
                         "minicube_context": kw["minicube_context"], "patch_overhang": kw["patch_overhang"]},
        exclude_cases=_parsed("--exclude-cases", _exclusions, kw["exclude_cases"]))


def _check_orientation(ctx, param, value: str) -> str:
    from voxseg.data.orientation import check_orientation_code

    if value.lower() in ("auto", "none"):
        return value.lower()
    try:
        return check_orientation_code(value)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; or auto, none") from None


def _training_flags(func):
    options = [
        click.option("--net", default="unet", show_default=True, help="network preset ('voxseg nets' lists them)"),
        click.option("--net-args", default="", help="preset overrides, e.g. base_width=16,depth=4"),
        click.option("--dims", type=click.Choice(["2", "3"]), default="3", show_default=True,
                     callback=lambda c, p, v: int(v), help="3-D patches or 2-D slices"),
        click.option("--loss", default="dice+ce", show_default=True, help="loss spec ('voxseg losses' lists them)"),
        click.option("--loss-args", default="", help="e.g. alpha=0.3,beta=0.7,gamma=1.33"),
        click.option("--label-scheme", type=click.Choice(["classes", "brats", "brats2023", "regions"]), default=None,
                     help="softmax classes, sigmoid BraTS regions (WT/TC/ET), or the regions of an nnU-Net "
                          "dataset.json [default: regions if dataset.json declares them, else classes]"),
        click.option("--memory", "memory_gib", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="GiB one training process may use; a planned patch (then batch) shrinks to fit "
                          "[default: 80% of the memory free]"),
        click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True),
        click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True, help="iterations per epoch"),
        click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None, help="minutes; stops cleanly at the budget"),
        click.option("--min-iterations", type=click.IntRange(min=0), default=None,
                     help="with --time-budget and a planned patch: shrink the patch until the budget holds this "
                          "many steps, timed on this machine (0: plan the patch for memory only) [default: 1000]"),
        click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True),
        click.option("--patch", default=None, help="patch size in voxels, e.g. 64x64x64 (default: planned)"),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="initial learning rate (sgd 0.01, adam 1e-3)"),
        click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw", "adadelta", "radam", "ranger"]),
                     default="sgd", show_default=True),
        click.option("--optimizer-args", default="", help="e.g. momentum=0.9 or k=6,alpha=0.5 (ranger)"),
        click.option("--schedule", type=click.Choice(["poly", "cosine", "flat_cosine", "constant"]), default="poly",
                     show_default=True, help="learning-rate schedule over the run (epochs or time budget)"),
        click.option("--schedule-args", default="", help="e.g. warmup=0.05,restarts=2"),
        click.option("--plateau", type=click.IntRange(min=1), default=None, help="halve the rate after N validations without gain"),
        click.option("--early-stopping", type=click.IntRange(min=1), default=None, help="stop after N validations without gain"),
        click.option("--swa-epochs", type=click.IntRange(min=0), default=0, show_default=True,
                     help="stochastic weight averaging epochs after the main run (checkpoint_swa.pt)"),
        click.option("--grad-clip", type=click.FloatRange(min=0), default=12.0, show_default=True),
        click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "none"]), default="auto", show_default=True,
                     help="mixed precision; auto measures whether bf16 is faster on this CPU"),
        click.option("--normalization", type=click.Choice(["zscore", "percentile", "ct", "none"]), default=None,
                     help="intensity normalisation [default: ct when dataset.json names every channel CT, as "
                          "nnU-Net does, else zscore]"),
        click.option("--ct-window", default=None, help="with ct: clip to LO,HI in HU [default: the 0.5th and 99.5th "
                     "percentiles of the training cases' labelled voxels]"),
        click.option("--spacing", default="none", show_default=True,
                     help="resample to this spacing in mm, z,y,x (e.g. 1,1,1); auto: to nnU-Net's target (the "
                          "cases' median) when their spacings differ; none: keep each case's own grid (said when "
                          "they differ)"),
        click.option("--n4", is_flag=True, help="N4 bias-field correction (SimpleITK) before normalisation"),
        click.option("--denoise", type=click.Choice(["gradient", "curvature"]), default=None,
                     help="anisotropic diffusion denoising (Perona-Malik gradient or curvature flow)"),
        click.option("--orientation", default="auto", show_default=True, callback=_check_orientation,
                     help="voxel order every scan is flipped / permuted to first, exactly, and back on output: "
                          "auto (the one most training cases are stored in), none (each file's own), or axis "
                          "codes such as RAS or LPS"),
        click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: all cores)"),
        click.option("--skip-invalid", is_flag=True, help="leave out cases that fail validation, and say which"),
        click.option("--folds", type=click.IntRange(min=2), default=None, help="k-fold cross-validation by case (RUN/fold_N/)"),
        click.option("--fold", default="all", show_default=True, help="which fold to train: an index or 'all'"),
        click.option("--init-from", type=click.Path(path_type=Path), default=None,
                     help="transfer learning: start from this run's weights (matching names and shapes)"),
        click.option("--freeze-stages", type=click.IntRange(min=0), default=0, show_default=True,
                     help="freeze the first N encoder stages"),
        click.option("--unfreeze-after", type=click.IntRange(min=0), default=None, help="unfreeze them at this epoch"),
        click.option("--val-every", type=click.IntRange(min=1), default=1, show_default=True, help="validate every N epochs"),
        click.option("--augment", type=click.Choice(["none", "flips", "default"]), default="flips",
                     show_default=True, help="augmentation preset (default: the full nnU-Net-like chain)"),
        click.option("--augment-args", default="", help="probabilities per transform, e.g. elastic=0.3,gamma=0"),
        click.option("--mode", type=click.Choice(["3d", "2d", "2.5d"]), default=None,
                     help="patches, slices, or 2.5-D stacks of --slices neighbours (2-D modes imply --dims 2)"),
        click.option("--slices", type=click.IntRange(min=1), default=3, show_default=True, help="slices per 2.5-D stack"),
        click.option("--slice-selection", type=click.IntRange(min=0), default=None,
                     help="2-D modes: slices with foreground plus N empty neighbours (Wang & Tang 2020)"),
        click.option("--channels", default=None, help="train on a channel subset by name, e.g. flair or t1ce,t2,flair"),
        click.option("--loader-workers", type=click.IntRange(min=0), default=0, show_default=True,
                     help="processes making batches ahead of the model"),
        click.option("--patch-overhang", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
                     help="how far training patches may reach beyond the cropped volume, as a fraction of the patch "
                          "(zero-filled there; 0.5: patch centres anywhere in the volume)"),
        click.option("--minicubes", default=None, help="train on the fixed partition into cubes, e.g. 80x96x96 "
                     "(Buchwald et al. 2022)"),
        click.option("--minicube-context", type=click.IntRange(min=0), default=0, show_default=True,
                     help="voxels of context read around each minicube (Buchwald et al. 2022: 20)"),
        click.option("--flag-hard-cases", is_flag=True,
                     help="after training, flag cases whose loss stays high (flagged_cases.json)"),
        click.option("--exclude-cases", default=None,
                     help="leave out these cases: ids separated by commas, or a flagged_cases.json"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", "run_dir", required=True, type=click.Path(path_type=Path), help="run folder to create")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint (or start a run "
                                             "planned with --plan-only)")
@click.option("--overwrite", is_flag=True, help="replace an existing run folder")
@click.option("--plan-only", is_flag=True, help="validate, preprocess and plan into --out, then stop: read or edit "
                                                "its plan.json, then train it with --resume")
@_training_flags
@user_errors
def train(data: Path, run_dir: Path, resume: bool, overwrite: bool, plan_only: bool, **kw) -> None:
    """Train a segmentation network on DATA into the run folder --out."""
    from voxseg.report import REPORT_NAME, plot_learning_curves, write_report
    from voxseg.runs.workflow import run_training

    from voxseg.train.distributed import rank_and_world

    if resume and overwrite:
        raise click.BadParameter("--resume continues the run in --out, --overwrite replaces it: give one of them",
                                 param_hint="'--resume'")
    if plan_only and resume:
        raise click.BadParameter("--plan-only plans a new run, --resume trains one: give one of them",
                                 param_hint="'--plan-only'")
    if resume and not run_dir.is_dir():
        raise InputError(run_dir, "nothing to resume: run folder not found")
    cross_validation = (run_dir / "splits.json").exists() and not overwrite and not plan_only
    if resume or (cross_validation and kw.get("folds")):
        # The run continues as its plan.json says; options typed now would silently not apply (but for which
        # folds of a cross-validation to train).
        from click.core import ParameterSource

        ctx = click.get_current_context()
        used = {"folds", "fold"} if cross_validation else set()
        ignored = [f"--{name.replace('_', '-')}" for name in kw
                   if name not in used and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
        if ignored:
            how = "--resume continues the run" if resume else "the cross-validation continues"
            warnings.warn(f"{run_dir}: {how} as its plan.json says; ignored: "
                          f"{', '.join(ignored)} (start a new run, or --overwrite this one, to change them)")
    result = run_training(data, run_dir, _train_options(**kw), overwrite=overwrite, resume=resume,
                          plan_only=plan_only)
    if result is None or rank_and_world()[0] != 0:  # planned only; under torchrun, rank 0 alone reports
        return
    if (run_dir / "splits.json").exists():  # k-fold: out-of-fold evaluation once every fold has trained
        from voxseg.metrics import evaluate_cross_validation

        evaluate_cross_validation(data, run_dir, log=click.echo)
    for log_csv in [run_dir / "log.csv", *sorted(run_dir.glob("fold_*/log.csv"))]:
        png = plot_learning_curves(log_csv, log_csv.parent / "learning_curves.png")
        if png:
            click.echo(f"learning curves: {png}")
    click.echo(f"report: {write_report(run_dir / REPORT_NAME, run_dir)}")
    click.echo(f"run folder: {run_dir} (best validation Dice of the last model trained: {result.best_metric:.4f})")


def _check_tta(ctx, param, value: str) -> str:
    from voxseg.infer.tta import tta_variants

    try:
        tta_variants(value, 3)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("input_path", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--probabilities", is_flag=True, help="also write probability maps (<case>_prob.nii.gz)")
@click.option("--checkpoint", type=click.Choice(["best", "last", "swa"]), default="best", show_default=True)
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=None, help="sliding-window overlap in [0, 1) (default: the run's)")
@click.option("--tta", default="none", show_default=True, callback=_check_tta,
              help="test-time augmentation: none, flips (8 flips), all (flips x axial 0/90 degrees = 16) or a count")
@click.option("--ensemble", "extra_runs", multiple=True, type=click.Path(path_type=Path),
              help="another run averaged with RUN (repeatable; may use another preprocessing)")
@click.option("--folds", default=None, help="use the fold_* models of each run: 'all' or e.g. '0,2' "
                                            "(default: the run's model, or all folds if it has none)")
@click.option("--merge-table", default=None, help="merge the label maps of the RUNs (one per pipeline) with a "
                                                  "built-in table (henry2020) or a JSON file")
@click.option("--postprocess/--no-postprocess", default=True, show_default=True,
              help="apply the run's postprocessing.json when it exists")
@click.option("--uncertainty", is_flag=True, help="also write <case>_uncertainty.nii.gz (mutual information of "
                                                  "TTA variants / members, nats)")
@click.option("--skip-invalid", is_flag=True, help="leave out input cases that fail validation, and say which")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"], case_sensitive=False), default="auto",
              show_default=True, help="where the networks run: auto (a CUDA GPU when there is one, else the CPU), "
                                      "cpu or cuda")
@user_errors
def predict(runs: tuple[Path, ...], input_path: Path, out: Path, probabilities: bool, checkpoint: str,
            overlap: float | None, tta: str, extra_runs: tuple[Path, ...], folds: str | None,
            merge_table: str | None, postprocess: bool, uncertainty: bool, skip_invalid: bool, device: str) -> None:
    """Segment INPUT (a NIfTI file, a case folder or a dataset folder) with RUNS into OUT.

    Several RUNS (or --ensemble) are averaged; with --merge-table each RUN is one pipeline of the table.
    """
    from voxseg.infer.predict import predict_path
    from voxseg.io.datasets import Dataset
    from voxseg.runs import checked_cases

    def refuse_invalid(cases):
        n_channels = max((len(c.image_paths) + len(c.missing_channels) for c in cases), default=0)
        names = [f"channel_{i}" for i in range(n_channels)]  # validation checks every channel listed here
        dataset = Dataset(root=input_path, layout="prediction", channel_names=names, cases=cases, label_names=None)
        return checked_cases(dataset, skip_invalid=skip_invalid, log=click.echo, require_labels=False)

    tta_value = int(tta) if tta.strip().isdigit() else tta
    results = predict_path(list(runs), input_path, out, probabilities, checkpoint, validate=refuse_invalid,
                           overlap=overlap, tta=tta_value, ensemble=list(extra_runs), folds=folds,
                           merge_table=merge_table, postprocess=postprocess, uncertainty=uncertainty,
                           log=click.echo, device=device)
    for r in results:
        extra = f", uncertainty {r.uncertainty_path}" if r.uncertainty_path else ""
        click.echo(f"{r.case_id}: {r.label_path} ({r.seconds:.1f} s{extra})")


@main.command()
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("gt", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="folder for metrics_per_case.csv and metrics_summary.json (default: PRED)")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="take label values, names and scheme from this run")
@click.option("--label-scheme", type=click.Choice(["classes", "brats", "brats2023", "regions"]), default=None,
              help="default: the run's; else the regions or names of the dataset.json beside an nnU-Net "
                   "labelsTr/; else each label value found")
@click.option("--lesionwise", is_flag=True, help="also BraTS 2023 lesion-wise Dice and HD95")
@user_errors
def evaluate(pred: Path, gt: Path, out_dir: Path | None, run_dir: Path | None, label_scheme: str | None,
             lesionwise: bool) -> None:
    """Compare predicted label maps in PRED with references in GT; per case and summarised."""
    from voxseg.metrics import evaluate_folders, format_summary
    from voxseg.metrics.structures import structures_for
    from voxseg.report import REPORT_NAME, write_report

    for folder, role in ((pred, "prediction"), (gt, "reference")):
        if not folder.is_dir():
            raise InputError(folder, f"{role} folder not found" if not folder.exists() else f"{role} path is not a folder")
    structures = structures_for(gt, run_dir, label_scheme)
    out_dir = out_dir or pred
    _, summary = evaluate_folders(pred, gt, out_dir, structures, lesionwise=lesionwise)
    columns = ("dice", "hd95_mm", "assd_mm", "surface_dice", "rel_vol_diff")
    click.echo(format_summary(summary, columns + (("lesion_dice", "lesion_hd95_mm") if lesionwise else ())))
    page = write_report(out_dir / REPORT_NAME, run_dir, [out_dir])
    click.echo(f"written: {out_dir / 'metrics_per_case.csv'}, {out_dir / 'metrics_summary.json'}, {page}")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.argument("evaluations", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "out_file", type=click.Path(path_type=Path), default=None,
              help="HTML file to write [default: FOLDER/report.html]")
@user_errors
def report(folder: Path, evaluations: tuple[Path, ...], out_file: Path | None) -> None:
    """One self-contained HTML page (pictures embedded) about FOLDER, a run folder (plan, data, learning
    curves, out-of-fold metrics; also while it trains) or an evaluation folder, and about EVALUATIONS of
    its predictions (metrics, Dice per case, best/median/worst case overlays)."""
    from voxseg.metrics.evaluate import JSON_NAME
    from voxseg.report import REPORT_NAME, write_report

    for path in (folder, *evaluations):
        if not path.is_dir():
            raise InputError(path, "folder not found" if not path.exists() else "not a folder")
    is_run = (folder / "plan.json").exists()
    if not is_run and not (folder / JSON_NAME).exists():
        raise InputError(folder, f"neither a run folder (plan.json) nor an evaluation folder ({JSON_NAME})")
    evaluations = tuple(evaluations) if is_run else (folder, *evaluations)
    written = write_report(out_file or folder / REPORT_NAME, folder if is_run else None, evaluations)
    click.echo(f"report: {written}")


@main.command()
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="a real dataset instead of the built-in synthetic phantoms")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("voxseg-demo"), show_default=True)
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True, help="training time budget")
@click.option("--overwrite", is_flag=True, help="replace an existing demo folder")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def demo(data: Path | None, out_dir: Path, minutes: float, overwrite: bool, seed: int) -> None:
    """Whole chain, no download, no GPU: make data (or use --data), train, predict held-out cases, evaluate."""
    from voxseg.demo import run_demo

    run_demo(out_dir, data=data, minutes=minutes, overwrite=overwrite, seed=seed, log=click.echo)


@main.command()
@click.option("--patch", default="64x64x64", show_default=True, help="input size for FLOPs")
@click.option("--dims", type=click.Choice(["2", "3"]), default="3", show_default=True)
@click.option("--in-channels", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--out-channels", type=click.IntRange(min=1), default=3, show_default=True)
def nets(patch: str, dims: str, in_channels: int, out_channels: int) -> None:
    """List network presets with parameters and forward FLOPs for a patch."""
    from voxseg.nets import NETWORKS, network_table

    size = _parsed("--patch", _parse_ints, patch)
    if len(size) not in (int(dims), 3) or (int(dims) == 3 and len(size) != 3):
        raise click.BadParameter(f"expected {dims} sizes for --dims {dims}, got {patch!r}", param_hint="'--patch'")
    size = size[-int(dims):]
    click.echo(network_table(list(NETWORKS), tuple(size), in_channels, out_channels))


@main.command()
def losses() -> None:
    """List losses with their references."""
    from voxseg.losses import loss_table

    click.echo(loss_table())


if __name__ == "__main__":
    main()
