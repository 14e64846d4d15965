"""Named network presets: `NETWORKS[name]` -> `NetworkSpec`; `build_network(name, ...)` builds one."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from voxseg.nets.unet import UNet
from voxseg.nets.vnet import VNet

__all__ = ["NetworkSpec", "NETWORKS", "build_network"]


@dataclass(frozen=True, eq=False)
class NetworkSpec:
    """A named network preset.

    Args:
        name: registry key.
        reference: citation of the paper the preset follows.
        builder: class (or callable) called as `builder(spatial_dims=, in_channels=, out_channels=, **kwargs)`.
        defaults: keyword arguments of the preset (overridable in `build_network`).
        spatial_dims: dimensionalities the preset is defined for (a paper that is 2-D or 3-D only).
        dims_defaults: extra defaults per dimensionality, e.g. nnU-Net's width cap (320 in 3-D, 512 in 2-D).
        notes: where and why the preset departs from the paper or from a later paper that uses it.
    """

    name: str
    reference: str
    builder: Callable[..., nn.Module]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    spatial_dims: tuple[int, ...] = (2, 3)
    dims_defaults: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    notes: str = ""

    def kwargs(self, spatial_dims: int, **overrides: Any) -> dict[str, Any]:
        """The builder keyword arguments for `spatial_dims`, with `overrides` applied last."""
        return {**self.defaults, **self.dims_defaults.get(spatial_dims, {}), **overrides}


_NNUNET_CAP = {3: {"max_width": 320}, 2: {"max_width": 512}}
_UNET_DEFAULTS = dict(
    base_width=32, depth=5, norm="instance", activation="leakyrelu", down="strided", up="transposed", block="plain"
)
_NNUNET_REF = (
    "Isensee et al., nnU-Net: a self-configuring method for deep learning-based biomedical image "
    "segmentation, Nature Methods 18:203-211, 2021"
)


def _spec(name: str, reference: str, builder, defaults, spatial_dims=(2, 3), dims_defaults=None, notes="") -> NetworkSpec:
    return NetworkSpec(
        name,
        reference,
        builder,
        MappingProxyType(dict(defaults)),
        tuple(spatial_dims),
        MappingProxyType({k: MappingProxyType(v) for k, v in (dims_defaults or {}).items()}),
        notes,
    )


NETWORKS: Mapping[str, NetworkSpec] = MappingProxyType(
    {
        s.name: s
        for s in (
            _spec(
                "unet",
                _NNUNET_REF + "; Ronneberger et al., U-Net, MICCAI 2015",
                UNet,
                _UNET_DEFAULTS,
                dims_defaults=_NNUNET_CAP,
                notes="voxseg default: nnU-Net plain U-Net without deep supervision.",
            ),
            _spec(
                "nnunet3d",
                _NNUNET_REF,
                UNet,
                {**_UNET_DEFAULTS, "deep_supervision": True, "max_width": 320},
                spatial_dims=(3,),
                notes="nnU-Net 3d_fullres plain U-Net; its 2-D configuration is 'unet' with deep_supervision=True.",
            ),
            _spec(
                "cicek3d",
                "Çiçek et al., 3D U-Net: Learning Dense Volumetric Segmentation from Sparse Annotation, MICCAI 2016",
                UNet,
                dict(
                    base_width=64, depth=4, max_width=None, mid_width_ratio=0.5, norm="batch", activation="relu",
                    down="maxpool", up="transposed", block="plain",
                ),
                spatial_dims=(3,),
                notes=(
                    "Channels 32->64, 64->128, 128->256, 256->512 (doubled before pooling, as the paper). "
                    "Differences: 'same' padding instead of valid convs; the up-conv halves the channels "
                    "(the paper keeps them, 512 -> 512) before concatenation."
                ),
            ),
            _spec(
                "buda2d",
                "Buda, Saha & Mazurowski, Association of genomic subtypes of lower-grade gliomas with shape "
                "features automatically extracted by a deep learning algorithm, Comput. Biol. Med. 109, 2019",
                UNet,
                dict(
                    base_width=32, depth=5, max_width=None, norm="batch", activation="relu", down="maxpool",
                    up="transposed", block="plain",
                ),
                spatial_dims=(2,),
                notes=(
                    "Four blocks of two 3x3 conv-BN-ReLU with 2x2 max-pooling, widths 32..256, bottleneck 512. "
                    "Buchwald et al. (2022) describe a one-conv bottleneck; Buda et al.'s network has two convs there like "
                    "every block, which we follow."
                ),
            ),
            _spec(
                "henry3d",
                "Henry et al., Brain tumor segmentation with self-ensembled, deeply-supervised 3D U-net neural "
                "networks: a BraTS 2020 challenge solution, BrainLes 2020 (LNCS 12658)",
                UNet,
                dict(
                    base_width=48, depth=4, max_width=None, norm="group", activation="relu", down="maxpool",
                    up="interp", block="plain", dilated_bottleneck=True, deep_supervision=True,
                ),
                spatial_dims=(3,),
                notes=(
                    "Four stages 48..384, two dilated (rate 2) convs concatenated with the last stage and fused "
                    "by one conv (pseudo 5th stage), trilinear up-sampling + 1x1 conv, deep supervision on the "
                    "bottleneck and the decoder (auxiliary logits at their own resolution). Group norm with 8 "
                    "groups. Henry et al. also trained a CBAM variant: pass attention='cbam'."
                ),
            ),
            _spec(
                "resunet",
                "Drozdzal et al., The Importance of Skip Connections in Biomedical Image Segmentation, DLMIA 2016",
                UNet,
                {**_UNET_DEFAULTS, "block": "residual"},
                dims_defaults=_NNUNET_CAP,
                notes="voxseg U-Net with residual (short-skip) stages; post-activation order, see ResidualBlock.",
            ),
            _spec(
                "denseunet",
                "Huang et al., Densely Connected Convolutional Networks, CVPR 2017; Li et al., H-DenseUNet, "
                "IEEE TMI 37(12), 2018",
                UNet,
                {**_UNET_DEFAULTS, "block": "dense"},
                dims_defaults=_NNUNET_CAP,
                notes="voxseg U-Net with dense stages (2 dense layers, growth C/2, 1x1 transition).",
            ),
            _spec(
                "attention_unet",
                "Oktay et al., Attention U-Net: Learning Where to Look for the Pancreas, MIDL 2018",
                UNet,
                {**_UNET_DEFAULTS, "attention": "gate"},
                dims_defaults=_NNUNET_CAP,
                notes="voxseg U-Net with additive attention gates on every skip connection.",
            ),
            _spec(
                "cbam_unet",
                "Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018; placement as Henry et al., "
                "BrainLes 2020",
                UNet,
                {**_UNET_DEFAULTS, "attention": "cbam"},
                dims_defaults=_NNUNET_CAP,
                notes="voxseg U-Net with CBAM at the end of every encoder stage.",
            ),
            _spec(
                "vnet",
                "Milletari, Navab & Ahmadi, V-Net: Fully Convolutional Neural Networks for Volumetric Medical "
                "Image Segmentation, 3DV 2016",
                VNet,
                dict(base_width=16, depth=5, kernel_size=5, norm=None, activation="prelu"),
                spatial_dims=(3,),
                notes="No normalisation, as the paper; pass norm='batch' for MONAI's variant.",
            ),
        )
    }
)


def build_network(name: str, spatial_dims: int, in_channels: int, out_channels: int, **overrides: Any) -> nn.Module:
    """Build a preset network.

    Args:
        name: a key of `NETWORKS` ("unet", "nnunet3d", "cicek3d", "buda2d", "henry3d", "resunet",
            "denseunet", "attention_unet", "cbam_unet", "vnet").
        spatial_dims: 2 for `(N, C, Y, X)` input, 3 for `(N, C, Z, Y, X)`.
        in_channels: input channels (modalities).
        out_channels: output channels (classes or regions).
        **overrides: keyword arguments of the builder (`UNet` or `VNet`) replacing the preset defaults,
            e.g. `base_width=16, deep_supervision=True`.

    Returns:
        The network, with attribute `size_divisor` (input sizes must be multiples of it).

    Raises:
        ValueError: unknown name, a dimensionality the preset's paper does not define, or an unknown
            override.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; available: {', '.join(NETWORKS)}")
    spec = NETWORKS[name]
    if spatial_dims not in spec.spatial_dims:
        only = "/".join(f"{d}-D" for d in spec.spatial_dims)
        raise ValueError(
            f"network {name!r} follows a {only}-only paper ({spec.reference}) and is not defined for "
            f"spatial_dims={spatial_dims}; use 'unet' or one of its variants for {spatial_dims}-D data"
        )
    params = inspect.signature(spec.builder).parameters
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        allowed = [p for p in params if p not in ("self", "spatial_dims", "in_channels", "out_channels")]
        raise ValueError(f"network {name!r} has no option(s) {', '.join(unknown)}; options: {', '.join(allowed)}")
    return spec.builder(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **spec.kwargs(spatial_dims, **overrides)
    )
