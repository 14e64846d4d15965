"""Segmentation losses, one module per family, and a registry.

Every loss is an ``nn.Module`` with ``forward(logits (N, C, *spatial), target) -> scalar``:

* ``mode="softmax"``: mutually exclusive classes; ``target`` is ``(N, 1, *spatial)`` or
  ``(N, *spatial)`` int64 class indices;
* ``mode="sigmoid"``: overlapping regions (BraTS WT/TC/ET); ``target`` is ``(N, C, *spatial)`` float 0/1.

Works for 2-D and 3-D; computes in float32 even under bf16 autocast. Formulas follow the original
papers (Tversky: ``alpha`` weights false positives, ``beta`` false negatives; focal-Tversky exponent
``1/gamma``), not Archit & Adilina (2022), who swap both.
"""
from voxseg.losses.compound import COMPONENTS, CompoundLoss, parse_loss_spec
from voxseg.losses.crossentropy import CrossEntropyLoss
from voxseg.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights, downsample_target
from voxseg.losses.dice import GeneralizedDiceLoss, SoftDiceLoss
from voxseg.losses.focal import FocalLoss
from voxseg.losses.registry import LOSSES, LossSpec, build_loss, loss_table, parse_loss_args, split_top_level
from voxseg.losses.tversky import FocalTverskyLoss, TverskyLoss

__all__ = [
    "SoftDiceLoss",
    "GeneralizedDiceLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "TverskyLoss",
    "FocalTverskyLoss",
    "CompoundLoss",
    "COMPONENTS",
    "parse_loss_spec",
    "DeepSupervisionLoss",
    "deep_supervision_weights",
    "downsample_target",
    "LossSpec",
    "LOSSES",
    "build_loss",
    "loss_table",
    "parse_loss_args",
    "split_top_level",
]
