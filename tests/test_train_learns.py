"""Training learns: a small network trained for a fixed number of steps on a few phantoms must segment phantoms
it has never seen far better than chance. Every other end-to-end test trains a few iterations and checks files;
this one fails when the loop runs but does not learn (labels misaligned with images, a loss that does not reach
the weights, an optimiser that does not step, predictions written in the wrong place)."""
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxseg.config import NetworkConfig, TrainConfig, TrainOptions
from voxseg.data.phantoms import make_phantom_dataset
from voxseg.infer import load_model, predict_cases
from voxseg.io import load_dataset
from voxseg.runs import run_training

SHAPE = (20, 24, 20)
EPOCHS, STEPS = 4, 15  # 60 iterations in all, batch 2, patch 16^3; the best of 4 validations is kept


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> tuple[Path, Path]:
    """A run trained on 4 phantoms (seed 11), and the predictions of its best checkpoint on 3 other phantoms
    (seed 12, never seen in training or validation)."""
    root = tmp_path_factory.mktemp("learns")
    train = make_phantom_dataset(root / "train", n_cases=4, shape=SHAPE, seed=11)
    test = make_phantom_dataset(root / "test", n_cases=3, shape=SHAPE, seed=12)
    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 8, "depth": 3}),
                           train=TrainConfig(patch_size=[16, 16, 16], epochs=EPOCHS, iterations_per_epoch=STEPS,
                                             num_threads=1, val_fraction=0.25, seed=0, amp="none"))
    run_training(train, root / "run", options, progress=False, log=lambda _: None)
    model, plan = load_model(root / "run")
    predict_cases(model, plan, load_dataset(test).cases, root / "pred", progress=False)
    return test, root / "pred"


def test_a_short_training_segments_unseen_phantoms_far_above_chance(held_out):
    test, pred_dir = held_out
    scores, chances = [], []
    for label_file in sorted((test / "labelsTr").glob("*.nii.gz")):
        ref = np.asarray(nib.load(label_file).dataobj) > 0  # whole tumour: labels 1, 2, 4
        pred = np.asarray(nib.load(pred_dir / label_file.name).dataobj) > 0
        brain = np.asarray(nib.load(test / "imagesTr" / label_file.name.replace(".nii", "_0000.nii")).dataobj) > 0
        scores.append(_dice(pred, ref))
        # Chance: labelling the whole brain tumour (what a model that learned nothing but "inside the crop"
        # would do) scores 2|T| / (|T| + |B|), 0.25-0.3 here; a random guess with the tumour's share of the
        # brain scores about |T| / |B|, lower still.
        chances.append(_dice(brain, ref))
    assert max(chances) < 0.3
    assert min(scores) > 0.6, (scores, chances)  # (about 0.8 when it learns)
