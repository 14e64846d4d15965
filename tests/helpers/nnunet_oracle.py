"""Run nnU-Net v2's own predictor on a model folder (the oracle of tests/test_nnunet_interop.py).

Usage (with a Python that has nnunetv2 installed): python nnunet_oracle.py MODEL_FOLDER INPUT_FOLDER OUT_FOLDER
FOLDS CHECKPOINT MIRROR(0/1)
"""
import os
import sys

for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ.setdefault(name, sys.argv[3])

import torch  # noqa: E402
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: E402

model, inputs, out, folds, checkpoint, mirror = sys.argv[1:7]
os.makedirs(out, exist_ok=True)
torch.set_num_threads(1)
predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror == "1",
                            perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                            allow_tqdm=False)
predictor.initialize_from_trained_model_folder(model, [f if f == "all" else int(f) for f in folds.split(",")],
                                               checkpoint)
predictor.predict_from_files_sequential(inputs, out, save_probabilities=False, overwrite=True,
                                        folder_with_segs_from_prev_stage=None)
