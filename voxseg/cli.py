"""Command line: parses, calls one function per command, prints. Bad input -> one line, exit code 2."""
from __future__ import annotations

import functools
import shlex
import sys
import warnings
from pathlib import Path

import click

from voxseg.cli_options import GroupedCommand, apply_recipe, knob_options, options_markdown, train_options
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
        except KeyboardInterrupt as err:
            click.echo(str(err) or "interrupted: finished files were kept, nothing half-written was left", err=True)
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


def _parsed(flag: str, parse, text):
    """``parse(text)``, with a malformed value reported as a usage error naming ``flag`` (exit 2)."""
    try:
        return parse(text)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{flag}'") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="voxseg")
def main() -> None:
    """voxseg: train, run and evaluate U-Net segmentation of 3D scans on a CPU, a GPU or a cluster."""


@main.command()
@click.argument("data", type=click.Path(path_type=Path))
@user_errors
def validate(data: Path) -> None:
    """Check every case of DATA; print a table and one line per problem (exit 2 if any)."""
    from voxseg.io.layouts import load_dataset
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


@main.command()
@click.argument("name", required=False)
@user_errors
def recipes(name: str | None) -> None:
    """List named recipes (the settings of published systems), or show recipe NAME in full."""
    from voxseg.config.recipes import format_recipe, list_recipes, load_recipe, recipes_table

    click.echo(format_recipe(load_recipe(name)) if name else recipes_table(list_recipes()))


@main.command(cls=GroupedCommand, more_params=knob_options)
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", "run_dir", required=True, type=click.Path(path_type=Path), help="run folder to create")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint (or start a run "
                                             "planned with --plan-only)")
@click.option("--overwrite", is_flag=True, help="replace an existing run folder")
@click.option("--recipe", default=None, metavar="NAME",
              help="start from a named recipe ('voxseg recipes' lists them); options given here override it")
@click.option("--plan-only", is_flag=True, help="validate, preprocess and plan into --out, then stop: read or edit "
                                                "its plan.json, then train it with --resume")
@user_errors
def train(data: Path, run_dir: Path, resume: bool, overwrite: bool, plan_only: bool, recipe: str | None,
          **kw) -> None:
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
        flags = {param.name: param.opts[0] for param in ctx.command.get_params(ctx)}
        ignored = ["--recipe"] * bool(recipe and resume) + [flags[name] for name in kw  # in the order typed
                   if name not in used and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
        if ignored:
            how = "--resume continues the run" if resume else "the cross-validation continues"
            warnings.warn(f"{run_dir}: {how} as its plan.json says; ignored: "
                          f"{', '.join(ignored)} (start a new run, or --overwrite this one, to change them)")
    record = apply_recipe(click.get_current_context(), kw, recipe) if recipe and not resume else {}
    options = train_options(kw)
    options.epochs_from_budget = _budget_given_alone(click.get_current_context(), record)
    if record:
        import dataclasses

        options = dataclasses.replace(options, recipe=record)
        overridden = f"; given here instead: {', '.join(record['overridden'])}" if record["overridden"] else ""
        click.echo(f"recipe {record['name']}: {len(record['values'])} option(s) from it{overridden}")
    try:
        result = run_training(data, run_dir, options, overwrite=overwrite, resume=resume, plan_only=plan_only)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_how_to_continue(data, run_dir)) from None
    if result is None or rank_and_world()[0] != 0:  # planned only; under torchrun, rank 0 alone reports
        return
    from voxseg.runs.run_folder import record_session

    record_session(run_dir, shlex.join(["voxseg", *sys.argv[1:]]))
    if (run_dir / "splits.json").exists():  # k-fold: out-of-fold evaluation once every fold has trained
        from voxseg.metrics import evaluate_cross_validation

        evaluate_cross_validation(data, run_dir, log=click.echo)
    for log_csv in [run_dir / "log.csv", *sorted(run_dir.glob("fold_*/log.csv"))]:
        png = plot_learning_curves(log_csv, log_csv.parent / "learning_curves.png")
        if png:
            click.echo(f"learning curves: {png}")
    click.echo(f"report: {write_report(run_dir / REPORT_NAME, run_dir)}")
    click.echo(f"run folder: {run_dir} (best validation Dice of the last model trained: {result.best_metric:.4f})")


def _how_to_continue(data: Path, run_dir: Path) -> str:
    """The line Ctrl-C during ``voxseg train`` prints: how to continue the run, when there is one to continue."""
    from voxseg.runs.run_folder import is_planned_run

    if (run_dir / "checkpoint_last.pt").exists() or is_planned_run(run_dir) or (run_dir / "splits.json").exists():
        return (f"interrupted: {run_dir} keeps what it finished (up to its last epoch); continue with: "
                f"voxseg train {data} --out {run_dir} --resume")
    return f"interrupted before training started: nothing was kept in {run_dir}; start again with the same command"


def _budget_given_alone(ctx: click.Context, record: dict) -> bool:
    """Whether ``--time-budget`` was given (typed, or by the recipe) and ``--epochs`` was not: planning then raises
    the epochs so that the budget ends the run."""
    from click.core import ParameterSource

    def given(name: str, flag: str) -> bool:
        typed = ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        return typed or flag in record.get("values", {})
    return given("train__time_budget_minutes", "time-budget") and not given("train__epochs", "epochs")


def _check_tta(ctx, param, value: str | None) -> str | None:
    from voxseg.infer.tta import tta_variants

    if value is None or value == "auto":
        return value
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
@click.option("--checkpoint", type=click.Choice(["best", "last", "swa", "final"]), default="best", show_default=True,
              help="which weights: best, last or swa of a voxseg run; for an nnU-Net model folder best "
                   "(checkpoint_best.pth, else checkpoint_final.pth), final or last (checkpoint_latest.pth)")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=None, help="sliding-window overlap in [0, 1) (default: the run's)")
@click.option("--tta", default=None, callback=_check_tta,
              help="test-time augmentation: auto, none, flips (8 flips), all (flips x axial 0/90 degrees = 16) or a "
                   "count [default: auto: flips when they add at most a minute per case, timed on the first case, "
                   "else none; for an nnU-Net model folder nnU-Net's mirroring, off with 'none']")
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
@click.option("--backend", type=click.Choice(["auto", "torch", "openvino"]), default="auto", show_default=True,
              help="what runs the network: auto (OpenVINO on a CPU where it is installed and measures faster, "
                   "else PyTorch), torch or openvino (CPU only)")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto (a voxseg run: its --amp; an nnU-Net model: bf16 where it measures faster), fp32 or bf16")
@user_errors
def predict(runs: tuple[Path, ...], input_path: Path, out: Path, probabilities: bool, checkpoint: str,
            overlap: float | None, tta: str, extra_runs: tuple[Path, ...], folds: str | None,
            merge_table: str | None, postprocess: bool, uncertainty: bool, skip_invalid: bool, device: str,
            backend: str, precision: str) -> None:
    """Segment INPUT (a NIfTI file, a case folder or a dataset folder) with RUNS into OUT.

    A RUN is a run folder or a model package (a 'voxseg export' zip, or its unpacked folder). Several RUNS (or
    --ensemble) are averaged; with --merge-table each RUN is one pipeline of the table.
    A RUN that is an nnU-Net v2 model folder (plans.json, dataset.json, fold_*), or a package of one, is predicted
    as nnU-Net does (INPUT: <case>_0000.nii.gz files; mirroring on unless --tta none).
    """
    from voxseg.errors import InputError
    from voxseg.infer.nnunet import is_nnunet_source
    from voxseg.infer.predict import predict_path
    from voxseg.io.datasets import Dataset
    from voxseg.runs import checked_cases

    if any(is_nnunet_source(r) for r in runs):
        _predict_nnunet(runs, input_path, out, checkpoint, tta, folds,
                        {"auto": "auto", "fp32": "none", "bf16": "bf16"}[precision], backend)
        return
    if checkpoint == "final":
        raise InputError(runs[0], "--checkpoint final is for nnU-Net model folders; a voxseg run has best, last, swa")
    tta = tta or "auto"

    def refuse_invalid(cases):
        n_channels = max((len(c.image_paths) + len(c.missing_channels) for c in cases), default=0)
        names = [f"channel_{i}" for i in range(n_channels)]  # validation checks every channel listed here
        dataset = Dataset(root=input_path, layout="prediction", channel_names=names, cases=cases, label_names=None)
        return checked_cases(dataset, skip_invalid=skip_invalid, log=click.echo, require_labels=False)

    tta_value = int(tta) if tta.strip().isdigit() else tta
    results = predict_path(list(runs), input_path, out, probabilities, checkpoint, validate=refuse_invalid,
                           overlap=overlap, tta=tta_value, ensemble=list(extra_runs), folds=folds,
                           merge_table=merge_table, postprocess=postprocess, uncertainty=uncertainty,
                           log=click.echo, device=device, backend=backend, precision=precision)
    for r in results:
        extra = f", uncertainty {r.uncertainty_path}" if r.uncertainty_path else ""
        click.echo(f"{r.case_id}: {r.label_path} ({r.seconds:.1f} s{extra})")


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.argument("out_zip", metavar="[OUT.zip]", required=False, type=click.Path(path_type=Path))
@click.option("--checkpoint", "checkpoints", type=click.Choice(["best", "last", "swa", "final"]), multiple=True,
              default=("best",), show_default=True, help="which weights to include (repeatable): best, last, swa of "
              "a voxseg run; for an nnU-Net model folder one of best (checkpoint_best.pth, else "
              "checkpoint_final.pth), final or last")
@click.option("--folds", default=None, help="the fold_* models to include: 'all' or e.g. '0,2' (default: the "
                                            "run's model, or all its folds if it has none)")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=None,
              help="also (or only) write the network as an ONNX file, its window, channels, normalisation and "
                   "label map in the file's metadata (needs pip install 'voxseg[onnx]')")
@user_errors
def export(run_dir: Path, out_zip: Path | None, checkpoints: tuple[str, ...], folds: str | None,
           onnx_path: Path | None) -> None:
    """Write the trained run RUN as one portable model package OUT.zip (plan, weights as safetensors, labels, model
    card, checksums), for 'voxseg predict OUT.zip ...' and 'voxseg train --init-from OUT.zip'; with --onnx, the
    network as an ONNX file for other runtimes.

    A RUN that is an nnU-Net v2 model folder becomes a package of its plans, dataset.json and fold weights, which
    'voxseg predict' runs as the folder."""
    from voxseg.errors import InputError

    if out_zip is None and onnx_path is None:
        raise InputError(run_dir, "say where to write: OUT.zip (a model package) and/or --onnx OUT.onnx")
    if onnx_path is not None:
        from voxseg.infer.onnx_export import export_onnx

        if len(checkpoints) > 1:
            raise InputError(onnx_path, "an ONNX file holds one network: give one --checkpoint")
        export_onnx(run_dir, onnx_path, checkpoint=checkpoints[0])
        click.echo(f"wrote {onnx_path}")
    if out_zip is not None:
        from voxseg.runs.export import export_package

        export_package(run_dir, out_zip, checkpoints, folds, log=click.echo)


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
    """Compare predicted label maps in PRED with references in GT; per case and summarised.

    With --run, each case is marked by its role in the run's split (training, validation, or unseen) and the
    held-out cases are summarised apart from the ones the run trained on."""
    from voxseg.metrics import evaluate_folders, format_summary, run_case_roles
    from voxseg.metrics.structures import structures_for
    from voxseg.report import REPORT_NAME, write_report

    for folder, role in ((pred, "prediction"), (gt, "reference")):
        if not folder.is_dir():
            raise InputError(folder, f"{role} folder not found" if not folder.exists() else f"{role} path is not a folder")
    structures = structures_for(gt, run_dir, label_scheme)
    out_dir = out_dir or pred
    roles = run_case_roles(run_dir) if run_dir is not None else None
    _, summary = evaluate_folders(pred, gt, out_dir, structures, lesionwise=lesionwise, case_roles=roles)
    columns = ("dice", "hd95_mm", "assd_mm", "surface_dice", "rel_vol_diff")
    columns += ("lesion_dice", "lesion_hd95_mm") if lesionwise else ()
    click.echo(format_summary(summary, columns))
    _echo_by_split(summary.get("by_split"), summary["n_cases"], run_dir, columns)
    page = write_report(out_dir / REPORT_NAME, run_dir, [out_dir])
    click.echo(f"written: {out_dir / 'metrics_per_case.csv'}, {out_dir / 'metrics_summary.json'}, {page}")


def _echo_by_split(by_split: dict | None, n_cases: int, run_dir: Path | None, columns: tuple[str, ...]) -> None:
    """Print the held-out cases' table and the trained ones' apart, with a one-line warning when the
    evaluation mixes cases the run trained on into its summary of all cases."""
    from voxseg.metrics import format_summary

    if not by_split:
        return
    trained = by_split.get("training", {}).get("n_cases", 0)
    for name, title in (("held_out", "held-out cases (validation + never seen)"),
                        ("training", "cases the run trained on (optimistic)")):
        if name in by_split:
            click.echo(f"\n{title}:\n{format_summary(by_split[name], columns)}")
    if trained:
        warnings.warn(f"{trained} of the {n_cases} evaluated cases were in the training split of {run_dir}: the "
                      f"summary of all cases is optimistic; report the held-out cases' "
                      f"({n_cases - trained}) summary")


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


def _predict_nnunet(runs: tuple[Path, ...], input_path: Path, out: Path, checkpoint: str, tta: str | None,
                    folds: str | None, amp: str, backend: str = "auto") -> None:
    """``voxseg predict NNUNET_MODEL_FOLDER INPUT OUT`` (one model folder; of the other options --backend and
    --precision apply, on the CPU)."""
    from voxseg.errors import InputError
    from voxseg.infer.nnunet import predict_nnunet_path

    if len(runs) != 1:
        raise InputError(runs[1], "give one nnU-Net model folder or package (its folds are averaged; --folds "
                                  "picks them)")
    if checkpoint == "swa":
        raise InputError(runs[0], "--checkpoint swa is for voxseg runs; an nnU-Net folder has best, final, last")
    for name, path, seconds in predict_nnunet_path(runs[0], input_path, out, folds=folds, which=checkpoint,
                                                   tta=tta or "mirror", amp=amp, log=click.echo,
                                                   backend=backend):
        click.echo(f"{name}: {path} ({seconds:.1f} s)")


@main.command()
@click.option("--patch", default="64x64x64", show_default=True, help="input size for FLOPs")
@click.option("--dims", type=click.Choice(["2", "3"]), default="3", show_default=True)
@click.option("--in-channels", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--out-channels", type=click.IntRange(min=1), default=3, show_default=True)
def nets(patch: str, dims: str, in_channels: int, out_channels: int) -> None:
    """List network presets with parameters and forward FLOPs for a patch."""
    from voxseg.nets import NETWORKS, network_table

    from voxseg.config import parse_sizes

    size = _parsed("--patch", parse_sizes, patch)
    if len(size) not in (int(dims), 3) or (int(dims) == 3 and len(size) != 3):
        raise click.BadParameter(f"expected {dims} sizes for --dims {dims}, got {patch!r}", param_hint="'--patch'")
    size = size[-int(dims):]
    click.echo(network_table(list(NETWORKS), tuple(size), in_channels, out_channels))
    from voxseg.infer.nnunet import NNUNET_ARCHITECTURES

    click.echo("\nnnU-Net v2 architectures that 'voxseg predict' runs from an nnU-Net model folder:")
    for name, about in NNUNET_ARCHITECTURES.items():
        click.echo(f"  {name:<22} {about}")


@main.command()
def losses() -> None:
    """List losses with their references."""
    from voxseg.losses import loss_table

    click.echo(loss_table())


@main.command("options-doc", hidden=True)
def options_doc() -> None:
    """Print the reference of every ``voxseg train`` option as Markdown (docs/options.md)."""
    click.echo(options_markdown(train), nl=False)


if __name__ == "__main__":
    main()
