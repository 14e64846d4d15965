"""A run's network as a standard ONNX file, for users who deploy elsewhere (``voxseg export RUN --onnx OUT``).

The file holds the network (input ``image``: ``(N, C, *window)`` float32 preprocessed intensities, output
``logits``: ``(N, K, *window)`` float32, the batch axis free, the window fixed) and, in its metadata
(``metadata_props``, strings; JSON for structures), what a caller needs to feed it and read it:

=====================  ==========================================================================================
key                    value
=====================  ==========================================================================================
``voxseg_version``     the voxseg version that wrote the file
``window``             JSON list: the window in voxels, ``[Z, Y, X]`` (``[Y, X]`` for a 2-D network)
``channel_names``      JSON list: the network's input channels, in order (2.5-D: ``name@z-1``, ``name@z+0``, ...)
``normalisation``      JSON: the run's preprocessing (crop, normalisation per channel, spacing, orientation)
``label_values``       JSON list: the label value of each class index (softmax) or of the label scheme
``label_scheme``       JSON: the run's label scheme (classes, or regions such as BraTS WT/TC/ET)
``activation``         ``softmax`` or ``sigmoid``: what turns the logits into probabilities
``overlap``            the sliding-window overlap the run predicts with
=====================  ==========================================================================================

Exporting needs the ``onnx`` package (``pip install 'voxseg[onnx]'``); the file is written under a temporary
name and renamed.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from voxseg.errors import InputError
from voxseg.infer.model_files import load_model
from voxseg.io.files import write_atomic

__all__ = ["export_onnx", "onnx_metadata"]

OPSET = 17


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise InputError("--onnx", "ONNX export needs the onnx package: pip install 'voxseg[onnx]'") from None
    return onnx


def onnx_metadata(plan) -> dict[str, str]:
    """The metadata written into the ONNX file of a network with this :class:`~voxseg.config.RunPlan` (see the
    module's table)."""
    import voxseg

    two_d = plan.network.spatial_dims == 2
    window = list(plan.train.patch_size)[1:] if two_d else list(plan.train.patch_size)
    names = [plan.channel_names[i] for i in plan.channel_indices]
    if plan.train.mode == "2.5d":  # each channel's k neighbour slices, channel by channel, z-h .. z+h
        half = plan.train.slices // 2
        names = [f"{name}@z{offset:+d}" for name in names for offset in range(-half, half + 1)]
    return {"voxseg_version": voxseg.__version__, "window": json.dumps(window), "channel_names": json.dumps(names),
            "normalisation": json.dumps(plan.preprocess.to_dict()), "label_values": json.dumps(plan.label_values),
            "label_scheme": json.dumps(plan.scheme.to_dict()), "activation": plan.activation,
            "overlap": str(plan.inference.overlap)}


def export_onnx(run_dir: str | Path, out_path: str | Path, checkpoint: str = "best") -> Path:
    """Write the network of a run (or fold) folder as an ONNX file with its metadata.

    Args:
        run_dir: a folder with ``plan.json`` and checkpoints.
        out_path: the ``.onnx`` file to write.
        checkpoint: ``"best"``, ``"last"`` or ``"swa"`` (:func:`voxseg.infer.load_model`).

    Returns:
        ``out_path``.

    Raises:
        InputError: the onnx package is missing (naming the ``onnx`` extra), or the run folder cannot be read.
    """
    onnx = _require_onnx()
    model, plan = load_model(run_dir, checkpoint, "cpu")
    meta = onnx_metadata(plan)
    window = json.loads(meta["window"])
    example = torch.zeros((1, len(json.loads(meta["channel_names"])), *window))
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.export.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():  # traced: the lean path steps aside, the plain graph goes
            warnings.simplefilter("ignore")  # tracer notes on shape checks (the window is fixed), exporter notices
            torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                              dynamo=False)
        proto = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "voxseg", meta["voxseg_version"]
    return write_atomic(out_path, lambda f: f.write(proto.SerializeToString()))
