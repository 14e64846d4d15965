"""``voxseg predict``: label maps (and optional probability / uncertainty maps) in each input's own geometry.

One case goes: read -> per pipeline, :func:`voxseg.infer.ensemble.ensemble_predict` (each member
preprocesses with its own plan, predicts with TTA, is restored to the original grid and averaged)
-> labels (original values) -> merge of pipelines (:class:`~voxseg.infer.merge.MergeTable`, when
several) -> post-processing rules (``postprocessing.json`` of the first run) -> write.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from voxseg.data.orientation import reoriented_spacing
from voxseg.data.preprocess import LabelMapping
from voxseg.errors import InputError
from voxseg.infer.backends import InferenceBackend
from voxseg.infer.ensemble import (EnsembleMember, check_members, combine_predictions, count_windows, load_members,
                                   predict_groups, prepare_groups)
from voxseg.infer.merge import MergeTable, load_merge_table
from voxseg.infer.package import is_package, open_package
from voxseg.infer.postprocess import PostRule, apply_postprocessing, load_postprocessing
from voxseg.infer.tta import TTA_AUTO, TTA_AUTO_SECONDS, tta_variants
from voxseg.io.datasets import Case, read_case
from voxseg.io.files import made_folder
from voxseg.io.prediction_cases import find_prediction_cases
from voxseg.io.image import ImageGeometry, is_nifti, orientation_code, write_volume
from voxseg.infer.sliding_window import probabilities_to_labels
from voxseg.nets.device import resolve_device
from voxseg.config import RunPlan

__all__ = ["PredictedCase", "PredictOptions", "predict_case", "predict_cases", "predict_path"]


@dataclass
class PredictedCase:
    case_id: str
    label_path: Path
    probability_path: Path | None
    seconds: float
    uncertainty_path: Path | None = None


@dataclass
class PredictOptions:
    """How cases are predicted beyond the plain sliding window.

    Attributes:
        tta: test-time augmentation, a name (``"none"``, ``"flips"``, ``"all"``) or a count; see
            :func:`voxseg.infer.tta.tta_variants`.
        uncertainty: also write ``<case>_uncertainty.nii.gz``: mutual information (nats) between the
            prediction and the TTA variant / member (:mod:`voxseg.infer.uncertainty`).
        postprocess: rules applied to the label map, in order (``None`` or empty: none).
        merge_table: merge the label maps of several pipelines with this table (one pipeline per
            table entry, in order); ``None``: a single pipeline.
        backend: what runs the networks on the windows, at which precision
            (:class:`~voxseg.infer.backends.InferenceBackend`, kept for all cases); ``None``: PyTorch at each
            run's ``amp``.
    """

    tta: str | int = "none"
    uncertainty: bool = False
    postprocess: list[PostRule] | None = field(default=None)
    merge_table: MergeTable | None = None
    backend: InferenceBackend | None = None


def _sibling(path: Path, suffix: str) -> Path:
    """``case.nii.gz`` -> ``case<suffix>.nii.gz``."""
    return path.with_name(path.name.replace(".nii", f"{suffix}.nii", 1))


def _as_pipelines(model, plan: RunPlan | None) -> list[list[EnsembleMember]]:
    if isinstance(model, torch.nn.Module):
        if plan is None:
            raise ValueError("a plan is needed with a single model")
        return [[EnsembleMember(model, plan)]]
    pipelines = [list(p) for p in model]
    if not pipelines or not all(pipelines):
        raise ValueError("pipelines must be non-empty lists of EnsembleMember")
    return pipelines


def _warn_if_unseen_spacing(pipelines: Sequence[Sequence[EnsembleMember]], case: Case,
                            geometry: ImageGeometry) -> None:
    """Say when a run that does not resample gets a scan whose voxel size its training cases did not have
    (compared in the run's orientation, where the run reorients scans)."""
    said: set[str] = set()
    source = orientation_code(geometry.affine)
    for member in (m for members in pipelines for m in members):
        if member.plan.preprocess.target_spacing or member.fingerprint is None:
            continue  # the run resamples every scan to its spacing, or it saved no fingerprint
        target = member.plan.preprocess.orientation
        spacing = (reoriented_spacing(geometry.spacing, source, target) if target and source else geometry.spacing)
        problem = member.fingerprint.spacing_problem(spacing)
        if problem and problem not in said:
            said.add(problem)
            warnings.warn(f"{case.case_id}: {problem} [{member.source}]", stacklevel=3)


def predict_case(model: torch.nn.Module | Sequence[Sequence[EnsembleMember]], plan: RunPlan | None, case: Case,
                 out_path: Path, probability_path: Path | None = None, device: torch.device | None = None,
                 progress: bool = False, options: PredictOptions | None = None,
                 uncertainty_path: Path | None = None) -> PredictedCase:
    """Segment one case and write its label map (original label values) in the input's geometry.

    Args:
        model: a network (with ``plan``), or pipelines: lists of :class:`EnsembleMember` averaged
            together; several pipelines need ``options.merge_table``.
        plan: the network's plan (ignored for pipelines: each member has its own).
        case: the case's channel files, in the model's channel order.
        out_path: label NIfTI to write (atomically).
        probability_path: also write ``(K, Z, Y, X)`` mean probabilities (of all pipelines) as a 4-D
            float32 NIfTI.
        device: where the networks run and blend their windows (they are moved there); default: where
            each network already is.
        options: TTA, uncertainty, post-processing, merge table (default: none of them).
        uncertainty_path: where the uncertainty map goes (default ``<out>_uncertainty.nii.gz`` when
            ``options.uncertainty``).
    """
    options = options or PredictOptions()
    pipelines = _as_pipelines(model, plan)
    if len(pipelines) > 1 and options.merge_table is None:
        raise ValueError("several pipelines need a merge table")
    start = time.perf_counter()
    image, _, geometry = read_case(case, with_label=False)
    _warn_if_unseen_spacing(pipelines, case, geometry)
    prepared = [prepare_groups(members, image, geometry.spacing, geometry.affine) for members in pipelines]
    del image  # only the cropped, preprocessed copies are needed from here on
    bar = tqdm(desc=case.case_id, unit="win", disable=None if progress else True, leave=False,
               total=sum(count_windows(groups, options.tta) for groups in prepared))
    preds = [predict_groups(groups, options.tta, options.uncertainty, device, progress=bar.update,
                            backend=options.backend)
             for groups in prepared]
    bar.close()
    plan = pipelines[0][0].plan
    mapping = LabelMapping(plan.label_values)
    maps = [mapping.to_original(probabilities_to_labels(p.probabilities, plan)) for p in preds]
    labels = options.merge_table.merge(maps) if options.merge_table is not None else maps[0]
    if options.postprocess:
        labels = apply_postprocessing(labels, options.postprocess)
    dtype = np.uint8 if max(plan.label_values) < 256 else np.int16
    write_volume(labels.astype(dtype), geometry, out_path)
    pooled = combine_predictions(preds)
    if probability_path is not None:
        write_volume(pooled.probabilities.astype(np.float32), geometry, probability_path)
    if options.uncertainty:
        uncertainty_path = uncertainty_path or _sibling(Path(out_path), "_uncertainty")
        write_volume(pooled.uncertainty(), geometry, uncertainty_path)
    else:
        uncertainty_path = None
    return PredictedCase(case.case_id, out_path, probability_path, time.perf_counter() - start, uncertainty_path)


def predict_cases(model: torch.nn.Module | Sequence[Sequence[EnsembleMember]], plan: RunPlan | None,
                  cases: list[Case], out_dir: str | Path, probabilities: bool = False, progress: bool = True,
                  options: PredictOptions | None = None, device: torch.device | None = None,
                  log: Callable[[str], None] | None = None) -> list[PredictedCase]:
    """Predict several cases into ``out_dir/<case_id>.nii.gz`` (and ``_prob`` / ``_uncertainty`` maps);
    ``device`` as :func:`predict_case`. ``options.tta`` ``"auto"`` chooses as ``voxseg predict`` does (its choice
    goes to ``log``)."""
    if options is not None and options.tta == TTA_AUTO and cases:
        def predict(chosen: list[Case], opts: PredictOptions) -> list[PredictedCase]:
            return predict_cases(model, plan, chosen, out_dir, probabilities, progress, opts, device)
        spatial_dims = (plan or model[0][0].plan).network.spatial_dims
        return _predict_choosing_tta(predict, cases, options, spatial_dims, log or (lambda line: None))
    results = []
    with made_folder(out_dir) as out_dir:  # a failed or interrupted prediction leaves no empty folder it made
        for case in tqdm(cases, desc="predict", unit="case", disable=None if progress else True):
            prob = out_dir / f"{case.case_id}_prob.nii.gz" if probabilities else None
            results.append(predict_case(model, plan, case, out_dir / f"{case.case_id}.nii.gz", prob, device=device,
                                        progress=progress and len(cases) == 1, options=options))
    return results


def _check_merge_labels(table: MergeTable, plan: RunPlan, source: Path) -> None:
    unknown = sorted(table.labels_used() - set(plan.label_values))
    if unknown:
        raise InputError(source, f"merge table {table.name!r} uses labels {unknown} that the run does not "
                                 f"predict (its labels: {plan.label_values})")


def _check_output_spares_input(input_path: Path, out: Path, cases: Sequence[Case]) -> None:
    """Refuse an output that would overwrite an input file (any channel of a case), or land among the input
    files (in the input folder or below it), where predictions would replace references or mix with scans."""
    source, target = input_path.resolve(), out.resolve()
    inputs = {p.resolve() for c in cases for p in [*c.image_paths, *([c.label_path] if c.label_path else [])]}
    if target == source or target in inputs:
        raise InputError(out, "is an input of this prediction; choose another output")
    if source.is_dir() and (target == source or source in target.parents):
        raise InputError(out, f"lies inside the input folder {input_path}; write predictions outside it")


def _load_pipelines(runs: list[Path], ensemble: list[Path], merge_table: MergeTable | None,
                    folds: str | Sequence[int] | None, which: str, device: torch.device) -> list[list[EnsembleMember]]:
    """The members of every pipeline: one pipeline per run with a merge table, else one of all runs together.

    Raises:
        InputError: ``ensemble`` runs with a merge table, a run count that is not the table's pipeline count,
            members that cannot be ensembled, or a table naming labels the runs do not predict.
    """
    if merge_table is not None:
        if ensemble:
            raise InputError(ensemble[0], "--ensemble cannot be combined with --merge-table: give one run per "
                                          "pipeline (its folds are averaged)")
        if len(runs) != len(merge_table.pipelines):
            raise InputError(runs[0], f"merge table {merge_table.name!r} merges {len(merge_table.pipelines)} "
                                      f"pipelines ({', '.join(merge_table.pipelines)}) but {len(runs)} runs were given")
        pipelines = [load_members([r], folds, which, device) for r in runs]
    else:
        pipelines = [load_members(runs + ensemble, folds, which, device)]
    members = [m for p in pipelines for m in p]
    check_members(members)
    if merge_table is not None:
        _check_merge_labels(merge_table, members[0].plan, runs[0])
    return pipelines


def _postprocessing(source: Path) -> list[PostRule] | None:
    """The post-processing rules of a run folder or a model package (None when it chose none)."""
    return open_package(source).postprocessing() if is_package(source) else load_postprocessing(source)


def _count_tta_variants(tta: str | int, plan: RunPlan, source: Path) -> int:
    """Number of TTA variants ``tta`` gives for the plan's network; an unknown value is an InputError."""
    try:
        return len(tta_variants(tta, plan.network.spatial_dims))
    except ValueError as exc:
        raise InputError(source, str(exc)) from None


def _single_output_case(out: Path, cases: list[Case]) -> Case:
    """The one case written to the output file ``out`` (its folder created); refuses several cases or a folder."""
    if len(cases) != 1:
        raise InputError(out, f"a single output file was given but the input holds {len(cases)} cases; "
                              "give a folder")
    if out.exists() and out.is_dir():
        raise InputError(out, "is a folder; name the output .nii.gz file, or a folder without the suffix")
    return cases[0]


def predict_path(run_dir: str | Path | Sequence[str | Path], input_path: str | Path, out: str | Path,
                 probabilities: bool = False, which: str = "best", progress: bool = True,
                 validate: Callable[[list[Case]], None] | None = None,
                 overlap: float | None = None, *, tta: str | int = TTA_AUTO,
                 ensemble: Sequence[str | Path] = (), folds: str | Sequence[int] | None = None,
                 merge_table: str | Path | MergeTable | None = None, postprocess: bool = True,
                 uncertainty: bool = False, log: Callable[[str], None] | None = None,
                 device: str | torch.device = "auto", backend: str = "auto",
                 precision: str = "auto") -> list[PredictedCase]:
    """``voxseg predict RUN [RUN ...] INPUT OUT``: INPUT is a NIfTI file, a case folder or a dataset folder.

    OUT is a folder, or a ``.nii.gz`` file name when INPUT is a single case. ``validate`` (if given)
    is called with the cases first and raises to refuse them.

    Args:
        run_dir: one run folder (or model package: a ``voxseg export`` zip or its unpacked folder), or several.
            Without a merge table every run (and every ``ensemble``
            run) is one more ensemble member; with one, each run is a pipeline of the table, in order.
        tta: see :func:`voxseg.infer.tta.tta_variants`; ``"auto"`` (:data:`voxseg.infer.tta.TTA_AUTO`): flips
            where timing the first case says they add at most a minute per case, else none.
        ensemble: extra runs averaged with ``run_dir`` (not with a merge table).
        folds: ``"all"``, ``"0,2"`` or fold numbers: use those ``fold_*`` models of every run (default:
            the run's own model, or all its folds when it has no top-level checkpoint).
        merge_table: a built-in name (``"henry2020"``), a JSON file or a :class:`MergeTable`.
        postprocess: apply ``postprocessing.json`` of the first run when it exists.
        uncertainty: also write ``<case>_uncertainty.nii.gz``.
        log: called with one line describing the models and options used.
        device: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"`` or ``"cuda"``
            (:func:`voxseg.nets.resolve_device`): the weights are loaded there and every window is predicted
            and blended there.
        backend: ``"auto"``, ``"torch"`` or ``"openvino"`` (:mod:`voxseg.infer.backends`): what runs the
            networks on the windows; ``auto`` takes OpenVINO on a CPU where it is installed and measures faster.
        precision: ``"auto"`` (each run's ``amp``), ``"fp32"`` or ``"bf16"``.

    Raises:
        InputError: not run folders, members that cannot be ensembled, a merge table that does not
            fit the runs, a single output file for several cases, or ``cuda`` without a GPU.
    """
    runs = [Path(run_dir)] if isinstance(run_dir, (str, Path)) else [Path(r) for r in run_dir]
    if not runs:
        raise InputError(Path("."), "no run folder given")
    device = resolve_device(device)
    engine = InferenceBackend(backend, precision)
    if backend == "openvino" and device.type != "cpu":
        raise InputError("--backend", f"openvino runs on the CPU, but the device is {device}; use --device cpu, "
                                      "or --backend torch (or auto) on a GPU")
    if isinstance(merge_table, (str, Path)):
        merge_table = load_merge_table(merge_table)
    pipelines = _load_pipelines(runs, [Path(r) for r in ensemble], merge_table, folds, which, device)
    members = [m for p in pipelines for m in p]
    plan = members[0].plan
    for member in members:
        if overlap is not None:
            member.plan.inference.overlap = overlap
    auto_tta = tta == TTA_AUTO
    n_tta = _count_tta_variants("none" if auto_tta else tta, plan, runs[0])
    if uncertainty and not auto_tta and n_tta * len(members) < 2:
        warnings.warn("--uncertainty measures disagreement between predictions: with one model and no TTA the map "
                      "is zero everywhere; add --tta flips (or more models)", stacklevel=2)
    if plan.train.num_threads:
        torch.set_num_threads(plan.train.num_threads)
    rules = _postprocessing(runs[0]) if postprocess else None
    options = PredictOptions(tta=tta, uncertainty=uncertainty, postprocess=rules, merge_table=merge_table,
                             backend=engine)
    if log is not None:
        post = "; ".join(r.describe() for r in rules) if rules else "none"
        merge = f", merged with table {merge_table.name!r}" if merge_table is not None else ""
        variants = "auto" if auto_tta else f"{n_tta} variant(s)"
        log(f"models: {len(members)} in {len(pipelines)} pipeline(s){merge}; TTA: {variants}; "
            f"post-processing: {post}; device: {device}; backend: {backend}, precision: {precision}")
    cases = find_prediction_cases(Path(input_path), plan.channel_names)
    if validate is not None:  # raises to refuse the cases, or returns the ones to keep
        kept = validate(cases)
        cases = cases if kept is None else kept
    out = Path(out)
    _check_output_spares_input(Path(input_path), out, cases)
    if is_nifti(out):
        prob = _sibling(out, "_prob") if probabilities else None
        case = _single_output_case(out, cases)

        def predict(chosen: list[Case], opts: PredictOptions) -> list[PredictedCase]:
            with made_folder(out.parent):
                return [predict_case(pipelines, None, case, out, prob, device=device, progress=progress,
                                     options=opts)]
        cases = [case]
    else:
        if out.exists() and not out.is_dir():
            raise InputError(out, "output exists and is not a folder (name a folder, or a .nii.gz file for one case)")

        def predict(chosen: list[Case], opts: PredictOptions) -> list[PredictedCase]:
            return predict_cases(pipelines, None, chosen, out, probabilities, progress, options=opts, device=device)
    if not auto_tta or not cases:
        return predict(cases, options)
    return _predict_choosing_tta(predict, cases, options, plan.network.spatial_dims, log or (lambda line: None))


def _predict_choosing_tta(predict: Callable, cases: list[Case], options: PredictOptions, spatial_dims: int,
                          log: Callable[[str], None]) -> list[PredictedCase]:
    """``--tta auto``: the first case predicted without TTA and timed (reading and writing included); every case
    with ``flips`` when they would add at most :data:`~voxseg.infer.tta.TTA_AUTO_SECONDS` per case (the first
    predicted again), else the others without TTA too. The choice is logged with its figures."""
    first = predict(cases[:1], replace(options, tta="none"))
    added = len(tta_variants("flips", spatial_dims)) - 1
    extra = added * first[0].seconds
    if extra <= TTA_AUTO_SECONDS:
        log(f"TTA auto: flips ({added + 1} variants; the first case took {first[0].seconds:.1f} s without them, "
            f"about {extra:.0f} s more per case with them; --tta none to skip)")
        return predict(cases, replace(options, tta="flips"))
    log(f"TTA auto: none (flips would add about {extra:.0f} s per case, over {TTA_AUTO_SECONDS:.0f} s; "
        f"--tta flips to use them)")
    return first + (predict(cases[1:], replace(options, tta="none")) if len(cases) > 1 else [])
