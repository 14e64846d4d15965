"""Run folders: from a dataset folder to a trained run (validate, preprocess into the cache, plan, split,
train, resume, k-fold cross-validation). ``TrainOptions`` (what a user chooses) is defined in ``voxseg.config``."""
from voxseg.config import DEFAULT_MIN_ITERATIONS, TrainOptions
from voxseg.runs.workflow import (DatasetInvalid, checked_cases, checked_patch_size, kfold_splits, prepare_cases,
                                  run_training, split_cases)

__all__ = ["DEFAULT_MIN_ITERATIONS", "DatasetInvalid", "TrainOptions", "checked_cases", "checked_patch_size",
           "kfold_splits", "prepare_cases", "run_training", "split_cases"]
