"""Running nnU-Net v2 trained-model folders (``plans.json``, ``dataset.json``, ``fold_*/checkpoint_*.pth``)
without nnU-Net: safe checkpoint reading, its networks in plain torch, and its whole prediction pipeline
(preprocessing, sliding window with mirroring, fold averaging, resampling back, label / region painting); and
such a model in voxseg's model package (:mod:`voxseg.infer.nnunet.package`)."""
from voxseg.infer.nnunet.model_folder import (NNUNET_CHECKPOINTS, NnunetFold, NnunetModel, choose_nnunet_folds,
                                              is_nnunet_model_folder, load_nnunet_model, nnunet_model,
                                              read_nnunet_checkpoint)
from voxseg.infer.nnunet.network import NNUNET_ARCHITECTURES, build_nnunet_network
from voxseg.infer.nnunet.package import (NNUNET_PACKAGE_KIND, is_nnunet_source, load_nnunet_package,
                                         load_nnunet_source, nnunet_package_members)
from voxseg.infer.nnunet.predict import (NnunetLabels, find_nnunet_cases, load_nnunet_networks, nnunet_label_info,
                                         predict_nnunet_case, predict_nnunet_path, sliding_window_logits)
from voxseg.infer.nnunet.preprocess import NORMALIZERS, NnunetCase, normalize_channel, preprocess_case, read_channels
from voxseg.infer.nnunet.resample import compute_new_shape, logits_to_labels, resample_data, separate_z_axis

__all__ = [
    "NNUNET_CHECKPOINTS", "NnunetFold", "NnunetModel", "choose_nnunet_folds", "is_nnunet_model_folder",
    "load_nnunet_model", "nnunet_model", "read_nnunet_checkpoint", "NNUNET_ARCHITECTURES", "build_nnunet_network",
    "NNUNET_PACKAGE_KIND", "is_nnunet_source", "load_nnunet_package", "load_nnunet_source", "nnunet_package_members",
    "NnunetLabels", "find_nnunet_cases", "load_nnunet_networks", "nnunet_label_info", "predict_nnunet_case", "predict_nnunet_path",
    "sliding_window_logits", "NORMALIZERS", "NnunetCase", "normalize_channel", "preprocess_case", "read_channels",
    "compute_new_shape", "logits_to_labels", "resample_data", "separate_z_axis",
]
