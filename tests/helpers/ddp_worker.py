"""Run by tests/test_train_features.py under torchrun: trains a tiny run without and one with deep supervision
(one launch for both), and saves this rank's weights of each as OUT/<variant>/rank<r>.pt beside OUT/<variant>/run."""
import sys
from pathlib import Path

import torch

from voxseg.config import NetworkConfig, TrainConfig, TrainOptions
from voxseg.runs import run_training

data, out = map(Path, sys.argv[1:3])
for variant in ("plain", "deep_supervision"):
    kwargs = {"base_width": 4, "depth": 3, "deep_supervision": variant == "deep_supervision"}
    options = TrainOptions(network=NetworkConfig(kwargs=kwargs),
                           train=TrainConfig(patch_size=[16, 16, 16], epochs=2, iterations_per_epoch=2, num_threads=1,
                                             val_fraction=0.25))
    result = run_training(data, out / variant / "run", options, overwrite=True, progress=False)
    rank = torch.distributed.get_rank()
    torch.save(result.model.state_dict(), out / variant / f"rank{rank}.pt")
torch.distributed.destroy_process_group()
