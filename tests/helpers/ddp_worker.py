"""Run by tests/test_train_features.py under torchrun: trains a tiny run, saves this rank's weights."""
import sys
from pathlib import Path

import torch

from voxseg.config import NetworkConfig, TrainConfig, TrainOptions
from voxseg.runs import run_training

data, run, out = map(Path, sys.argv[1:4])
deep_supervision = sys.argv[4:5] == ["deep_supervision"]
options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 3, "deep_supervision": deep_supervision}),
                       train=TrainConfig(patch_size=[16, 16, 16], epochs=2, iterations_per_epoch=2, num_threads=1,
                                         val_fraction=0.25))
result = run_training(data, run, options, overwrite=True, progress=False)
rank = torch.distributed.get_rank()
torch.save(result.model.state_dict(), out / f"rank{rank}.pt")
torch.distributed.destroy_process_group()
