"""Training: the loop (sampling, step, validation, checkpoints, DDP) and the dataset-to-run workflow
(validation, preprocessing cache, planning, splits, k-fold cross-validation). The out-of-fold evaluation of a
k-fold run comes after training, in ``voxseg.metrics.evaluate_cross_validation``."""
from voxseg.train.checkpoint_files import CHECKPOINT_BEST, CHECKPOINT_LAST, CHECKPOINT_SWA, checkpoint_path
from voxseg.train.loop import PreparedCase, TrainResult, train_model
from voxseg.train.workflow import (DEFAULT_MIN_ITERATIONS, DatasetInvalid, TrainOptions, checked_cases, checked_patch_size, kfold_splits,
                                   prepare_cases, run_training, split_cases)

__all__ = ["CHECKPOINT_BEST", "CHECKPOINT_LAST", "CHECKPOINT_SWA", "checkpoint_path", "PreparedCase", "TrainResult",
           "train_model", "DEFAULT_MIN_ITERATIONS", "DatasetInvalid", "TrainOptions", "checked_cases", "checked_patch_size", "kfold_splits",
           "prepare_cases", "run_training", "split_cases"]
