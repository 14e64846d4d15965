"""Post-processing rules on hand-made label maps, and their selection by cross-validation Dice."""
import json

import numpy as np
import pytest

from voxseg.data.labels import LabelScheme
from voxseg.errors import InputError
from voxseg.infer.postprocess import PostRule, apply_postprocessing, candidate_rules, load_postprocessing
from voxseg.metrics.postprocessing import choose_postprocessing, save_postprocessing


def _two_blobs():
    label = np.zeros((6, 6, 6), np.uint8)
    label[0:2, 0:2, 0:2] = 1  # 8 voxels
    label[5, 5, 5] = 1        # 1 voxel, not face-connected to the first
    return label


def test_largest_component_of_a_class():
    out = PostRule("largest_component", "label 1", [1]).apply(_two_blobs())
    assert out.sum() == 8 and out[5, 5, 5] == 0


def test_largest_component_of_a_region_spans_labels():
    label = np.zeros((6, 6, 6), np.uint8)
    label[0:2, 0:2, 0:2] = 2
    label[0, 0, 0] = 1       # part of the same WT component
    label[4:6, 4:6, 5] = 4   # a separate, smaller WT component
    out = PostRule("largest_component", "WT", [1, 2, 4]).apply(label)
    assert out[0, 0, 0] == 1 and (out[0:2, 0:2, 0:2] > 0).all()
    assert not (out == 4).any()
    assert (label[4:6, 4:6, 5] == 4).all()  # input untouched


def test_remove_small_components():
    label = _two_blobs()
    label[3, 3:5, 0] = 1  # a 2-voxel component
    out = PostRule("remove_small", "label 1", [1], min_voxels=2).apply(label)
    assert out[5, 5, 5] == 0 and out[3, 3, 0] == 1 and out.sum() == 10
    filled = PostRule("remove_small", "label 1", [1], min_voxels=3, fill=2).apply(label)
    assert filled[5, 5, 5] == 2 and filled[3, 3, 0] == 2 and (filled == 1).sum() == 8


def test_et_to_ncr_below_threshold_only():
    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, :] = 2
    label[1, 1, 0:3] = 4  # 3 ET voxels
    small = PostRule("et_to_ncr", "ET", [4], min_voxels=4, fill=1).apply(label)
    assert not (small == 4).any() and (small == 1).sum() == 3 and (small == 2).sum() == 4
    kept = PostRule("et_to_ncr", "ET", [4], min_voxels=3, fill=1).apply(label)
    np.testing.assert_array_equal(kept, label)
    rules = [PostRule("et_to_ncr", "ET", [4], 4, 1), PostRule("largest_component", "WT", [1, 2, 4])]
    np.testing.assert_array_equal(apply_postprocessing(label, rules), rules[1].apply(rules[0].apply(label)))
    with pytest.raises(ValueError):
        PostRule("dilate", "x", [1])


def test_selection_keeps_a_rule_that_helps_and_rejects_one_that_hurts(tmp_path):
    pairs = []
    for shift in range(3):
        ref = np.zeros((8, 8, 8), np.uint8)
        ref[1 + shift:4 + shift, 1:4, 1:4] = 1
        pred = ref.copy()
        pred[7, 7, 7 - shift] = 1  # a distant false-positive speck
        pairs.append((pred, ref))
    helps = PostRule("largest_component", "label 1", [1])
    hurts = PostRule("remove_small", "label 1", [1], min_voxels=1000)
    choice = choose_postprocessing(pairs, [hurts, helps], {"label 1": [1]})
    assert choice.rules == [helps]
    assert [row["kept"] for row in choice.table] == [False, True]
    assert choice.table[0]["dice_after"]["label 1"] == 0.0
    assert choice.table[1]["dice_after"]["label 1"] == 1.0 > choice.baseline["label 1"]
    path = save_postprocessing(choice, tmp_path)
    assert path.name == "postprocessing.json" and json.loads(path.read_text())["selection"][1]["kept"]
    assert load_postprocessing(tmp_path) == [helps]
    assert load_postprocessing(tmp_path / "none") is None
    path.write_text("{bad")
    with pytest.raises(InputError):
        load_postprocessing(tmp_path)


def test_selection_of_the_brats_et_rule_from_probabilities():
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:6, 2:6, 2:6] = 2
    ref[3:5, 3:5, 3:5] = 1  # no enhancing tumour in the reference
    pred = ref.copy()
    pred[2:6, 2:6, 2] = 4   # 16 false ET voxels (too many for remove_small): ET Dice 0 instead of 1
    probs = np.stack([pred == v for v in (0, 1, 2, 4)]).astype(np.float32)
    lut = np.array([0, 1, 2, 4])
    choice = choose_postprocessing([(probs, ref)], candidate_rules("brats", [0, 1, 2, 4]),
                                   LabelScheme("brats").structures(), to_labels=lambda p: lut[p.argmax(0)])
    # Greedy: the first threshold fixes ET; the larger ones bring nothing more and are not kept.
    assert [(r.kind, r.min_voxels) for r in choice.rules] == [("et_to_ncr", 200)]
    row = next(r for r in choice.table if r["kept"])
    assert row["dice_before"]["ET"] == 0.0 and row["dice_after"]["ET"] == 1.0
    with pytest.raises(ValueError):
        choose_postprocessing([(probs, ref)], [], {"ET": [4]})


def test_candidate_rules():
    brats = candidate_rules("brats2023", [0, 1, 2, 3])
    assert {r.kind for r in brats} == {"largest_component", "remove_small", "et_to_ncr"}
    assert all(r.labels == [3] and r.fill == 1 for r in brats if r.kind == "et_to_ncr")
    classes = candidate_rules("classes", [0, 1, 2])
    assert classes[0].labels == [1, 2] and {tuple(r.labels) for r in classes} == {(1, 2), (1,), (2,)}
    assert PostRule.from_dict(json.loads(json.dumps(classes[0].to_dict()))) == classes[0]


def test_choose_run_postprocessing_from_out_of_fold_predictions(tmp_path):
    import nibabel as nib

    from voxseg.metrics.postprocessing import choose_run_postprocessing
    from voxseg.config import RunPlan

    run = tmp_path / "cv"
    for sub in ("oof/pred", "oof/ref"):
        (run / sub).mkdir(parents=True)
    RunPlan(channel_names=["a"], label_values=[0, 1], label_names={"1": "lesion"}).save(run / "plan.json")
    for i in range(2):
        ref = np.zeros((8, 8, 8), np.uint8)
        ref[1:4 + i, 1:4, 1:4] = 1
        pred = ref.copy()
        pred[7, 7, 7] = 1
        nib.save(nib.Nifti1Image(ref, np.eye(4)), run / "oof/ref" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(pred, np.eye(4)), run / "oof/pred" / f"c{i}.nii.gz")
    choice = choose_run_postprocessing(run)
    assert [r.kind for r in choice.rules] == ["largest_component"]
    assert load_postprocessing(run) == choice.rules
    with pytest.raises(InputError):
        choose_run_postprocessing(tmp_path / "cv", pred_dir=tmp_path)


def test_candidates_for_dataset_json_regions_fill_with_the_enclosing_region():
    scheme = LabelScheme("regions", region_values={"whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing": (3,)})
    rules = candidate_rules(scheme, [0, 1, 2, 3], min_voxels=(5,))
    assert [(r.kind, r.structure, r.labels, r.fill) for r in rules] == [
        ("largest_component", "whole tumor", [1, 2, 3], 0),
        ("remove_small", "tumor core", [2, 3], 1),
        ("remove_small", "enhancing", [3], 2),
    ]
    label = np.zeros((1, 1, 12), np.uint8)
    label[0, 0, :8] = 2
    label[0, 0, 2] = 3  # one enhancing voxel inside the core: removed, it stays core (label 2)
    assert rules[2].apply(label)[0, 0, 2] == 2
