"""Run folders: from a dataset folder to a trained run (validate, preprocess into the cache, plan, split,
train, resume, k-fold cross-validation).

Modules: ``checks`` (dataset checks for training), ``run_folder`` (a run
folder's layout and life), ``kfold`` (cross-validation), ``workflow`` (:func:`run_training`), ``export`` (:func:`export_package`, a run as a model package).
"""
from voxseg.config import DEFAULT_MIN_ITERATIONS, TrainOptions
from voxseg.data.cache import prepare_cases
from voxseg.data.splits import kfold_splits, split_cases
from voxseg.plan.planner import checked_patch_size
from voxseg.runs.checks import DatasetInvalid, checked_cases
from voxseg.runs.export import export_package
from voxseg.runs.workflow import run_training

__all__ = ["DEFAULT_MIN_ITERATIONS", "DatasetInvalid", "TrainOptions", "checked_cases", "checked_patch_size",
           "export_package", "kfold_splits", "prepare_cases", "run_training", "split_cases"]
