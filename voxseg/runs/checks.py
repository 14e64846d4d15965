"""Dataset checks for training: validation (refuse, or leave out the failing cases), label maps with foreground,
the cases the user included or excluded, label values that fit the label scheme, labels no case holds."""
from __future__ import annotations

import dataclasses
from typing import Callable

from voxseg.data.labels import LabelScheme, check_labels_fit
from voxseg.data.preprocess import LabelMapping
from voxseg.errors import InputError, InputProblems
from voxseg.infer.package import source_weights
from voxseg.nets import resolve_device
from voxseg.io.datasets import Case, Dataset
from voxseg.io.validate import CaseSummary, validate_dataset
from voxseg.plan.resolve import resolve_label_scheme
from voxseg.config import TrainOptions

__all__ = ["DatasetInvalid", "checked_cases", "checked_setup"]


class DatasetInvalid(InputProblems):
    """A dataset failed validation; ``problems`` holds one printable line per problem."""


def checked_cases(dataset: Dataset, skip_invalid: bool, log: Callable[[str], None] = print,
                  require_labels: bool = True) -> list[Case]:
    """Validate ``dataset``; refuse it (``DatasetInvalid``) or leave out the failing cases."""
    return _validated(dataset, skip_invalid, log, require_labels)[0]


def checked_setup(dataset: Dataset, options: TrainOptions, log: Callable[[str], None]
                  ) -> tuple[list[Case], LabelMapping, dict[str, CaseSummary]]:
    """The cases a run trains on (validated, ``options.include_cases`` / ``exclude_cases`` applied), their label
    mapping, and their validation rows (each case's first image's shape, spacing and voxel order, its label
    values), so that nothing validation read is read again. Refused (one line) before anything is written,
    also when the checkpoint of ``--init-from`` cannot be read (safely: no code in it runs)."""
    resolve_device(options.train.device)  # --device cuda without a GPU: said before any case is read
    if options.train.init_from:  # read before the run folder is made: a wrong path or a bad file leaves nothing
        source_weights(options.train.init_from)  # a run folder or a model package
    if options.include_cases is not None:  # only these are validated (and reported), e.g. the demo's split
        keep = set(options.include_cases)
        dataset = dataclasses.replace(dataset, cases=[c for c in dataset.cases if c.case_id in keep])
    if options.exclude_cases:
        unknown = sorted(set(options.exclude_cases) - {c.case_id for c in dataset.cases})
        if unknown:
            raise InputError(dataset.root, f"--exclude-cases names case(s) not in this dataset: {', '.join(unknown)}")
    cases, rows = _validated(dataset, options.skip_invalid, log)
    if options.exclude_cases:
        drop = set(options.exclude_cases)
        cases = [c for c in cases if c.case_id not in drop]
        rows = {case_id: row for case_id, row in rows.items() if case_id not in drop}
        log(f"left out {len(drop)} excluded case(s): {', '.join(sorted(drop))}")
    if not cases:
        raise InputError(dataset.root, "no cases left to train on")
    log(f"dataset {dataset.root}: layout {dataset.layout}, {len(cases)} cases, channels "
        f"{', '.join(dataset.channel_names)} (this order is saved with the model)")
    label_values = _label_values(rows, dataset)
    _check_label_scheme(resolve_label_scheme(options, dataset), dataset, label_values, rows, log)
    return cases, LabelMapping(label_values), rows


def _validated(dataset: Dataset, skip_invalid: bool, log: Callable[[str], None] = print,
               require_labels: bool = True) -> tuple[list[Case], dict[str, CaseSummary]]:
    """:func:`checked_cases`, and the validation row of each case kept."""
    allowed = set(int(v) for v in dataset.label_names) if dataset.label_names else None
    report = validate_dataset(dataset, allowed_labels=allowed, progress=True, require_labels=require_labels)
    problems = report.problems
    if not problems:
        kept = _with_foreground([c for c in dataset.cases if c.label_path is not None or not require_labels],
                                report, dataset, require_labels)
    else:
        lines = [str(p) for p in problems]
        if not skip_invalid:
            raise DatasetInvalid(lines + [f"{dataset.root}: {len(lines)} problem(s); fix them or pass --skip-invalid "
                                          "to leave those cases out"])
        bad = {p.case_id for p in problems}
        for line in lines:
            log(f"skipping: {line}")
        kept = [c for c in dataset.cases if c.case_id not in bad]
        log(f"--skip-invalid: left out {len(bad)} case(s) ({', '.join(sorted(bad))}); {len(kept)} remain")
        if not kept:
            raise InputError(dataset.root, "no valid cases left after --skip-invalid")
        kept = _with_foreground(kept, report, dataset, require_labels)
    ids = {c.case_id for c in kept}
    return kept, {r.case_id: r for r in report.rows if r.case_id in ids}


def _with_foreground(cases: list[Case], report, dataset: Dataset, require_labels: bool) -> list[Case]:
    """Refuse training data whose label maps are all background: it would train to Dice 0 without a word."""
    n = report.background_only({c.case_id for c in cases})
    if require_labels and n:
        raise InputError(dataset.root, f"the label maps of all {n} case(s) hold only background (0): nothing to learn")
    return cases


def _label_values(rows: dict[str, CaseSummary], dataset: Dataset) -> list[int]:
    """The run's label values: dataset.json's when it names them, else those validation found in the cases."""
    if dataset.label_names:
        return sorted(int(v) for v in dataset.label_names)
    return sorted({0} | _found_labels(rows))


def _found_labels(rows: dict[str, CaseSummary]) -> set[int]:
    return {int(v) for r in rows.values() for v in (r.label_values or ())}


def _check_label_scheme(scheme: LabelScheme, dataset: Dataset, label_values: list[int],
                        rows: dict[str, CaseSummary], log: Callable[[str], None]) -> None:
    """Say which regions a ``regions`` scheme trains, refuse label values a region scheme cannot map, and warn
    about labels no case holds."""
    if scheme.name == "regions":
        log("labels: the regions of dataset.json, one sigmoid output each: "
            + "; ".join(f"{name} {list(values)}" for name, values in scheme.regions.items())
            + " (--label-scheme classes trains each label value as a class instead)")
    if scheme.is_region_based:
        try:
            check_labels_fit(label_values, scheme)
        except ValueError as exc:
            raise InputError(dataset.root, str(exc)) from None
    _warn_absent_labels(scheme, dataset, _found_labels(rows), len(rows), log)


def _warn_absent_labels(scheme: LabelScheme, dataset: Dataset, found: set[int], n_cases: int, log) -> None:
    """Say which regions (region schemes) or dataset.json labels (classes) no case holds: the network learns
    they never appear, and they score Dice 1 wherever rightly absent (e.g. --label-scheme brats, whose ET
    is 4, on BraTS 2023 labels, whose ET is 3)."""
    if scheme.is_region_based:
        absent = [f"{name} (label {', '.join(map(str, values))})" for name, values in scheme.regions.items()
                  if not set(values) & found]
        hint = (f"; check --label-scheme ({scheme.name}: "
                f"{'; '.join(f'{n} = {list(v)}' for n, v in scheme.regions.items())})")
    else:
        absent = [f"label {v} ({dataset.label_names[v]})" for v in sorted(dataset.label_names or {})
                  if v != 0 and v not in found]
        hint = " (dataset.json names it)"
    if absent and found - {0}:
        log(f"warning: {'; '.join(absent)} occurs in none of the {n_cases} case(s) of {dataset.root}{hint}: the "
            f"network learns it never appears, and its Dice counts as 1 wherever it is rightly absent")
