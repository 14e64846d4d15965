"""Training: the loop (:mod:`~voxseg.train.loop`) composed of its parts: batches, one optimisation step
(:mod:`~voxseg.train.step`), learning-rate phases (:mod:`~voxseg.train.phases`), validation, the training state
and its checkpoints (:mod:`~voxseg.train.state`), DDP; optimisers and learning-rate schedules.
Planning a run comes next (:mod:`voxseg.plan`), then the run folder's workflow (:mod:`voxseg.runs`)."""
from voxseg.train.loop import PreparedCase, TrainResult, train_model

__all__ = ["PreparedCase", "TrainResult", "train_model"]
