"""Training: the loop (sampling, step, validation, checkpoints, DDP) and the dataset-to-run workflow
(validation, preprocessing cache, planning, splits, k-fold cross-validation, out-of-fold evaluation)."""
from voxseg.train.loop import PreparedCase, TrainResult, train_model
from voxseg.train.workflow import (DatasetInvalid, TrainOptions, checked_cases, checked_patch_size, kfold_splits,
                                   out_of_fold_evaluation, prepare_cases, run_training, split_cases)

__all__ = ["PreparedCase", "TrainResult", "train_model", "DatasetInvalid", "TrainOptions", "checked_cases",
           "checked_patch_size", "kfold_splits", "out_of_fold_evaluation", "prepare_cases", "run_training", "split_cases"]
