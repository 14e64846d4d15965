"""Planning from the voxel spacing: the resampling target when the cases' spacings differ, a U-Net's strides and
kernels for anisotropic voxels (both nnU-Net's rules), and patches with per-axis divisors."""
from __future__ import annotations

import dataclasses

import nibabel as nib
import pytest
import torch

from voxseg.data.phantoms import make_phantom_dataset
from voxseg.nets import build_network
from voxseg.config import NetworkConfig, RunPlan, TrainConfig, parse_key_values
from voxseg.plan import plan_patch_size, plan_strides, plan_target_spacing
from voxseg.runs import TrainOptions, run_training


def test_isotropic_and_mildly_anisotropic_spacings_keep_the_defaults():
    assert plan_strides([1.0, 1.0, 1.0], 5) is None
    assert plan_strides([1.5, 0.9, 0.9], 5) is None  # IBSR-like: within 2x
    assert plan_strides([0.8, 0.8], 5) is None


def test_thick_slices_are_not_downsampled_or_convolved_until_in_plane_catches_up():
    # nnU-Net's get_pool_and_conv_props on 4 x 1 x 1 mm (without its size limit): the slice axis joins once
    # the in-plane spacing is within a factor 2 of it (strictly), i.e. after two steps, at 4 mm.
    strides, kernels = plan_strides([4.0, 1.0, 1.0], 5)
    assert strides == [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kernels == [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    strides, kernels = plan_strides([5.0, 0.7, 0.7], 4)  # 5 mm / 2.8 mm < 2 at the third step
    assert strides == [[1, 2, 2], [1, 2, 2], [2, 2, 2]]
    assert kernels[:3] == [[1, 3, 3], [1, 3, 3], [3, 3, 3]]
    strides, _ = plan_strides([1.0, 1.0, 3.0], 3)  # the coarse axis may be any axis
    assert strides == [[2, 2, 1], [2, 2, 2]]
    with pytest.raises(ValueError, match="positive"):
        plan_strides([0.0, 1.0, 1.0], 5)


def test_planned_strides_build_a_network_whose_lean_path_matches_the_plain_one():
    strides, kernels = plan_strides([4.0, 1.0, 1.0], 4)
    net = build_network("unet", 3, 1, 3, base_width=4, depth=4, strides=strides, kernel_sizes=kernels).eval()
    assert net.size_divisor == (2, 8, 8)
    x = torch.randn(1, 1, 6, 16, 24)
    with torch.enable_grad():
        plain = net(x).detach()
    with torch.inference_mode():
        lean = net(x)
    assert torch.allclose(lean, plain, atol=1e-4)


def test_patch_rounds_and_shrinks_each_axis_by_its_own_divisor():
    assert plan_patch_size((9, 50, 35), (4, 16, 16), 64 ** 3) == [12, 64, 48]
    assert plan_patch_size((9, 50, 35), 16, 64 ** 3) == [16, 64, 48]
    # shrinking takes the largest axis first, one of its own divisors at a time, never below one divisor
    assert plan_patch_size((20, 200, 200), (4, 16, 16), 32 ** 3) == [20, 32, 48]  # ties: the first axis
    assert plan_patch_size((5, 30, 40), (16, 16), 10 ** 6, spatial_dims=2) == [1, 32, 48]
    with pytest.raises(ValueError, match="divisor"):
        plan_patch_size((9, 50, 35), (4, 16), 64 ** 3)


def test_training_plans_strides_for_thick_slices_and_saves_them(tmp_path):
    data = make_phantom_dataset(tmp_path / "thick", n_cases=3, shape=(10, 48, 48), spacing=(4.0, 1.0, 1.0), seed=3)
    lines: list[str] = []
    train = TrainConfig(epochs=1, iterations_per_epoch=1, val_fraction=0.0, num_threads=1)
    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 4}), train=train)
    run_training(data, tmp_path / "run", options, progress=False, log=lines.append)
    plan = RunPlan.load(tmp_path / "run" / "plan.json")
    assert plan.network.kwargs["strides"] == [[1, 2, 2], [1, 2, 2], [2, 2, 2]]
    assert plan.network.kwargs["kernel_sizes"][0] == [1, 3, 3]
    assert plan.train.patch_size[0] % 2 == 0 and plan.train.patch_size[0] < 16  # divisor 2 along z, not 8
    assert any(line.startswith("anisotropic voxels 4 x 1 x 1 mm: strides 1x2x2 1x2x2 2x2x2") for line in lines), lines
    # the user's own strides are theirs
    lines.clear()
    mine = [[2, 2, 2]] * 3
    network = NetworkConfig(kwargs={"base_width": 4, "depth": 4, "strides": mine})
    run_training(data, tmp_path / "mine", dataclasses.replace(options, network=network), progress=False,
                 log=lines.append)
    assert RunPlan.load(tmp_path / "mine" / "plan.json").network.kwargs["strides"] == mine
    assert not any(line.startswith("anisotropic") for line in lines)
    # a transfer from the thick-slice run keeps its strides and kernels (and so all of its weights), even on
    # isotropic data
    iso = make_phantom_dataset(tmp_path / "iso", n_cases=3, shape=(24, 24, 24), spacing=(1.0, 1.0, 1.0), seed=4)
    lines.clear()
    transfer = dataclasses.replace(train, init_from=str(tmp_path / "run"), patch_size=[8, 24, 24])
    run_training(iso, tmp_path / "transfer", dataclasses.replace(options, train=transfer), progress=False,
                 log=lines.append)
    assert RunPlan.load(tmp_path / "transfer" / "plan.json").network.kwargs["strides"] == plan.network.kwargs["strides"]
    initialised = [line for line in lines if line.startswith("initialised")]
    assert initialised and initialised[0].split()[1].split("/")[0] == initialised[0].split()[1].split("/")[1]
    # a transfer into a network of another depth cannot use them: it plans its own (here: none, isotropic data)
    run_training(iso, tmp_path / "deeper", TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 3}),
                                                        train=transfer), progress=False)
    assert "strides" not in RunPlan.load(tmp_path / "deeper" / "plan.json").network.kwargs


def test_isotropic_training_keeps_the_default_network(tmp_path):
    data = make_phantom_dataset(tmp_path / "iso", n_cases=3, shape=(24, 24, 24), spacing=(1.0, 1.0, 1.0), seed=4)
    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 3}),
                           train=TrainConfig(epochs=1, iterations_per_epoch=1, val_fraction=0.0, num_threads=1))
    run_training(data, tmp_path / "run", options, progress=False)
    assert "strides" not in RunPlan.load(tmp_path / "run" / "plan.json").network.kwargs


def test_net_args_take_json_lists():
    assert parse_key_values("strides=[[1,2,2],[2,2,2]],base_width=8") == {"strides": [[1, 2, 2], [2, 2, 2]],
                                                                            "base_width": 8}
    with pytest.raises(ValueError, match=r"strides=\[\[1,2,2\],\[2,2 is not a list; write one as JSON"):
        parse_key_values("strides=[[1,2,2],[2,2")


def test_target_spacing_is_the_median_or_none_when_the_cases_agree():
    assert plan_target_spacing([[1.0, 1.0, 1.0]] * 3, [[50, 60, 50]] * 3) is None
    assert plan_target_spacing([[1.2, 1.0, 1.0], [1.0, 0.9, 0.9]], [[50] * 3] * 2) is None  # within 1.25x
    assert plan_target_spacing([[1, 1, 1], [2, 1, 1], [1.5, 1, 1]], [[50] * 3] * 3) == [1.5, 1.0, 1.0]


def test_target_spacing_of_a_much_coarser_axis_is_its_10th_percentile():
    # nnU-Net's rule: 5 of 9 cases at 5 mm slices make the median 5 mm, over 3x the in-plane 0.7 mm with a
    # tenth of the voxels along it: the slice axis takes the 10th percentile (1 mm), keeping the thin cases' detail.
    spacings = [[5.0, 0.7, 0.7]] * 5 + [[1.0, 0.7, 0.7]] * 4
    assert plan_target_spacing(spacings, [[40, 512, 512]] * 9) == [1.0, 0.7, 0.7]
    # with as many voxels along it as in-plane, the median stays
    assert plan_target_spacing(spacings, [[400, 512, 512]] * 9) == [5.0, 0.7, 0.7]
    with pytest.raises(ValueError, match="positive"):
        plan_target_spacing([[0.0, 1.0, 1.0]], [[4, 4, 4]])


@pytest.fixture(scope="module")
def mixed_spacings(tmp_path_factory):
    """Phantoms of which two cases say 2.4 mm slices in their headers (images and labels), two 1.2 mm."""
    data = make_phantom_dataset(tmp_path_factory.mktemp("mixed") / "ds", n_cases=4, shape=(20, 24, 20),
                                spacing=(1.2, 1.0, 1.0), seed=6)
    for path in sorted(data.rglob("*.nii.gz")):
        if any(f"_{i:03d}" in path.name for i in (2, 3)):
            img = nib.load(path)
            affine = img.affine.copy()
            affine[:3, 2] *= 2.0  # the file's third axis is voxseg's Z
            out = nib.Nifti1Image(img.get_fdata().astype(img.get_data_dtype()), affine)
            nib.save(out, path)
    return data


def test_cases_whose_spacings_differ_are_said_and_resampled_on_request(mixed_spacings, tmp_path):
    import dataclasses

    from voxseg.infer import load_model

    lines: list[str] = []
    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 3}),
                           train=TrainConfig(patch_size=[16, 16, 16], epochs=1, iterations_per_epoch=1,
                                             val_fraction=0.0, num_threads=1))
    run_training(mixed_spacings, tmp_path / "own", options, progress=False, log=lines.append)
    assert RunPlan.load(tmp_path / "own" / "plan.json").preprocess.target_spacing is None
    assert any(line.startswith("warning: the cases' voxel spacings differ (z 1.2-2.4 mm): each is trained at its "
                               "own grid") and "--spacing auto resamples them to 1.8 x 1 x 1 mm" in line
               for line in lines), lines
    lines.clear()
    run_training(mixed_spacings, tmp_path / "auto", dataclasses.replace(options, spacing="auto"), progress=False,
                 log=lines.append)
    plan = RunPlan.load(tmp_path / "auto" / "plan.json")
    assert plan.preprocess.target_spacing is not None
    assert list(plan.preprocess.target_spacing) == pytest.approx([1.8, 1.0, 1.0])
    assert any(line.startswith("spacing: the cases' voxel spacings differ (z 1.2-2.4 mm): every case is resampled")
               for line in lines), lines
    load_model(tmp_path / "auto")  # the run loads with its resampling


def test_cli_spacing_auto_none_and_numbers(mixed_spacings, tmp_path):
    from click.testing import CliRunner

    from voxseg.cli import main

    tiny = ["--net-args", "base_width=4,depth=3", "--patch", "16x16x16", "--epochs", "1", "--iterations", "1",
            "--threads", "1", "--val-fraction", "0"]
    for name, spacing, expected in (("none", "none", None), ("given", "2,1,1", [2.0, 1.0, 1.0]),
                                    ("auto", "auto", [1.8, 1.0, 1.0])):
        result = CliRunner().invoke(main, ["train", str(mixed_spacings), "--out", str(tmp_path / name),
                                           "--spacing", spacing, *tiny])
        assert result.exit_code == 0, result.output
        got = RunPlan.load(tmp_path / name / "plan.json").preprocess.target_spacing
        assert (got is None) if expected is None else list(got) == pytest.approx(expected)
    result = CliRunner().invoke(main, ["train", str(mixed_spacings), "--out", str(tmp_path / "bad"), "--spacing",
                                       "fine", *tiny])
    assert result.exit_code == 2 and "--spacing" in result.output and not (tmp_path / "bad").exists()
