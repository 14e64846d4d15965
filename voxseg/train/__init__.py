"""Training: the loop (sampling, step, validation, checkpoints, DDP), optimisers and learning-rate schedules.
Planning a run comes next (:mod:`voxseg.plan`), then the run folder's workflow (:mod:`voxseg.runs`)."""
from voxseg.train.loop import PreparedCase, TrainResult, train_model

__all__ = ["PreparedCase", "TrainResult", "train_model"]
