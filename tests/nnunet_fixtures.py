"""Tiny nnU-Net v2 trained-model folders and raw inputs, written by hand in nnU-Net's formats (plans.json,
dataset.json, fold_<f>/checkpoint_final.pth as nnU-Net's trainer saves it), random weights, fixed seeds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from voxseg.infer.nnunet import build_nnunet_network

_IMPORTS = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def architecture(dims: int, residual: bool, n_stages: int = 3) -> dict:
    """An ``architecture`` entry as nnU-Net's planners write it (small widths)."""
    kw = {
        "n_stages": n_stages, "features_per_stage": [4 * 2 ** s for s in range(n_stages)],
        "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": [[3] * dims] * n_stages, "strides": [[1] * dims] + [[2] * dims] * (n_stages - 1),
        "n_conv_per_stage_decoder": [1] * (n_stages - 1), "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }
    if residual:
        kw["n_blocks_per_stage"] = [1, 3, 4, 6][:n_stages]
        name = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    else:
        kw["n_conv_per_stage"] = [2] * n_stages
        name = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    return {"network_class_name": name, "arch_kwargs": kw, "_kw_requires_import": _IMPORTS}


def configuration(dims: int, residual: bool, spacing, patch, schemes=("ZScoreNormalization",),
                  masks=(False,)) -> dict:
    probs = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    return {
        "data_identifier": "nnUNetPlans_x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": list(spacing),
        "normalization_schemes": list(schemes), "use_mask_for_norm": list(masks),
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": probs,
        "architecture": architecture(dims, residual), "batch_dice": False,
    }


def make_model_folder(root: Path, config_name: str = "3d_fullres", residual: bool = False, regions: bool = False,
                      folds=(0,), channels: int = 1, schemes=None, masks=None, spacing=(2.0, 1.0, 1.0),
                      patch=(16, 16, 16), transpose=((0, 1, 2), (0, 1, 2)), mirror_axes=None, seed: int = 0,
                      checkpoint: str = "checkpoint_final.pth") -> Path:
    """Write a trained-model folder ``root/<Trainer>__nnUNetPlans__<config>`` and return it."""
    dims = 2 if config_name == "2d" else 3
    mirror_axes = tuple(range(dims)) if mirror_axes is None else mirror_axes  # nnU-Net's default: every axis
    schemes = schemes or ["ZScoreNormalization"] * channels
    masks = masks or [False] * channels
    folder = root / f"nnUNetTrainer__nnUNetPlans__{config_name}"
    folder.mkdir(parents=True)
    config = configuration(dims, residual, spacing[-dims:], patch[-dims:], schemes, masks)
    plans = {
        "dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing), "original_median_shape_after_transp": [20, 24, 24],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(transpose[0]),
        "transpose_backward": list(transpose[1]), "configurations": {config_name: config},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 900.0, "mean": 120.0 + c, "median": 110.0, "min": -50.0, "percentile_00_5": -20.0,
                     "percentile_99_5": 400.0, "std": 60.0} for c in range(channels)},
    }
    if regions:
        labels = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}
        dataset = {"labels": labels, "regions_class_order": [1, 2, 3]}
        outputs = 3
    else:
        dataset = {"labels": {"background": 0, "left": 1, "right": 2}}
        outputs = 3
    dataset.update({"channel_names": {str(c): f"MR{c}" for c in range(channels)}, "numTraining": 4,
                    "file_ending": ".nii.gz"})
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    for k, fold in enumerate(folds):
        torch.manual_seed(seed + k)
        net = build_nnunet_network(config["architecture"], channels, outputs)
        with torch.no_grad():  # larger, varied outputs than the default init, so labels are not near-ties
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        save_checkpoint(folder / f"fold_{fold}" / checkpoint, net.state_dict(), plans, config_name, fold, dataset,
                        mirror_axes)
    return folder


def save_checkpoint(path: Path, weights: dict, plans: dict, config_name: str, fold, dataset: dict,
                    mirror_axes) -> None:
    """torch.save of the dict nnU-Net's trainer writes (numpy floats in its log, a torch.device in init_args)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "network_weights": weights,
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99, "nesterov": True,
                                                            "params": [0, 1]}]},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.5)],
                    "dice_per_class_or_region": [[np.float64(0.4), np.float64(0.6)]], "train_losses": [0.9],
                    "val_losses": [0.8], "lrs": [0.01], "epoch_start_timestamps": [1.0],
                    "epoch_end_timestamps": [2.0]},
        "_best_ema": np.float64(0.5), "current_epoch": 1,
        "init_args": {"plans": plans, "configuration": config_name, "fold": fold, "dataset_json": dataset,
                      "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": tuple(mirror_axes) if mirror_axes else None,
    }, path)


def write_case(folder: Path, name: str, shape=(14, 22, 19), spacing=(1.1, 0.9, 2.3), channels: int = 1,
               seed: int = 0, two_d: bool = False) -> list[Path]:
    """``<name>_<XXXX>.nii.gz`` channel files: a bright blob in a zero background (cropping matters), with an
    oblique direction and an origin, so geometry errors show."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in range(channels):
        if two_d:
            array = np.zeros(shape[1:], np.float32)
            array[3:-2, 2:-3] = rng.normal(100 + 20 * c, 30, (shape[1] - 5, shape[2] - 5))
        else:
            array = np.zeros(shape, np.float32)
            array[2:-1, 3:-2, 1:-3] = rng.normal(100 + 20 * c, 30, (shape[0] - 3, shape[1] - 5, shape[2] - 4))
        image = sitk.GetImageFromArray(array.astype(np.float32))
        if two_d:
            image.SetSpacing(spacing[:2])
            image.SetOrigin((3.0, -2.0))
        else:
            image.SetSpacing(spacing)
            image.SetOrigin((3.0, -2.0, 7.5))
            angle = 0.3
            image.SetDirection((np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0))
        path = folder / f"{name}_{c:04d}.nii.gz"
        sitk.WriteImage(image, str(path))
        paths.append(path)
    return paths
