"""Training learns: a small network trained for a fixed number of steps on a few phantoms must segment phantoms
it has never seen far better than chance. Every other end-to-end test trains a few iterations and checks files;
this one fails when the loop runs but does not learn (each patch trained on another patch's labels, a loss that
does not reach the weights, an optimiser that does not step, predictions written in the wrong place). A run
that resampled (``--spacing``) must predict in the files' own geometry and learn as well."""
from pathlib import Path

import nibabel as nib
import numpy as np

from voxseg.config import NetworkConfig, RunPlan, TrainConfig, TrainOptions
from voxseg.data.phantoms import make_phantom_dataset
from voxseg.infer import load_model, predict_cases
from voxseg.io import load_dataset
from voxseg.runs import run_training

SHAPE = (20, 24, 20)
EPOCHS, STEPS = 4, 15  # 60 iterations in all, batch 2, patch 16^3; the best of 4 validations is kept


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _train_and_predict(root: Path, spacing=None) -> tuple[Path, Path, Path]:
    """Train on 4 phantoms (seed 11) and predict, with the best checkpoint, 3 other phantoms (seed 12, never
    seen in training or validation). Returns the test dataset, the prediction folder and the run folder."""
    train = make_phantom_dataset(root / "train", n_cases=4, shape=SHAPE, seed=11)
    test = make_phantom_dataset(root / "test", n_cases=3, shape=SHAPE, seed=12)
    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 8, "depth": 3}),
                           train=TrainConfig(patch_size=[16, 16, 16], epochs=EPOCHS, iterations_per_epoch=STEPS,
                                             num_threads=1, val_fraction=0.25, seed=0, amp="none"),
                           **({"spacing": spacing} if spacing else {}))
    run_training(train, root / "run", options, progress=False, log=lambda _: None)
    model, plan = load_model(root / "run")
    predict_cases(model, plan, load_dataset(test).cases, root / "pred", progress=False)
    return test, root / "pred", root / "run"


def _whole_tumour_dice(test: Path, pred_dir: Path) -> tuple[list[float], list[float]]:
    """Per test case: the prediction's whole-tumour Dice (labels 1, 2, 4 together), and the chance level."""
    scores, chances = [], []
    for label_file in sorted((test / "labelsTr").glob("*.nii.gz")):
        ref = np.asarray(nib.load(label_file).dataobj) > 0
        pred = np.asarray(nib.load(pred_dir / label_file.name).dataobj) > 0
        brain = np.asarray(nib.load(test / "imagesTr" / label_file.name.replace(".nii", "_0000.nii")).dataobj) > 0
        scores.append(_dice(pred, ref))
        # Chance: labelling the whole brain tumour (what a model that learned nothing but "inside the crop"
        # would do) scores 2|T| / (|T| + |B|), 0.25-0.3 here; a random guess with the tumour's share of the
        # brain scores about |T| / |B|, lower still.
        chances.append(_dice(brain, ref))
    return scores, chances


def test_a_short_training_segments_unseen_phantoms_far_above_chance(tmp_path_factory):
    scores, chances = _whole_tumour_dice(*_train_and_predict(tmp_path_factory.mktemp("learns"))[:2])
    assert max(chances) < 0.3
    assert min(scores) > 0.6, (scores, chances)  # (about 0.8 when it learns)


def test_a_run_that_resampled_predicts_in_the_input_geometry_and_still_learns(tmp_path_factory):
    """``--spacing``: trained on a coarser grid than the files' 1.2 x 1 x 1 mm, predicted back onto theirs."""
    test, pred_dir, run = _train_and_predict(tmp_path_factory.mktemp("resampled"), spacing=(1.5, 1.5, 1.5))
    plan = RunPlan.load(run / "plan.json")
    assert tuple(plan.preprocess.target_spacing) == (1.5, 1.5, 1.5)
    for label_file in sorted((test / "labelsTr").glob("*.nii.gz")):
        pred, ref = nib.load(pred_dir / label_file.name), nib.load(label_file)
        assert pred.shape == ref.shape
        np.testing.assert_allclose(pred.affine, ref.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 4}
    scores, chances = _whole_tumour_dice(test, pred_dir)
    assert np.mean(scores) > 0.55 and min(scores) > 0.45, (scores, chances)  # (0.57-0.72 when it learns)
