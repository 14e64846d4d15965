"""Training: the loop (sampling, step, validation, checkpoints) and the dataset-to-run workflow."""
from voxseg.train.loop import PreparedCase, TrainResult, train_model
from voxseg.train.workflow import (DatasetInvalid, TrainOptions, checked_cases, prepare_cases, run_training,
                                   split_cases)

__all__ = ["PreparedCase", "TrainResult", "train_model", "DatasetInvalid", "TrainOptions", "checked_cases",
           "prepare_cases", "run_training", "split_cases"]
