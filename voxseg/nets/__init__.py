"""Networks: the U-Net family (2-D and 3-D), V-Net, named presets, size/cost info, freeze helpers, and the
device and precision a network runs at.

Typical use::

    from voxseg.nets import build_network
    net = build_network("unet", spatial_dims=3, in_channels=4, out_channels=3)
    logits = net(x)  # x (N, 4, Z, Y, X), each size a multiple of net.size_divisor
"""
from voxseg.nets._base import check_spatial_size, shrink_longest_axis, smallest_patch_sides
from voxseg.nets.blocks import DenseBlock, PlainBlock, ResidualBlock
from voxseg.nets.extras import CBAM, AttentionGate, DilatedBottleneck
from voxseg.nets.info import count_parameters, estimate_flops, estimate_saved_activation_bytes, network_table
from voxseg.nets.registry import NETWORKS, NetworkSpec, build_network
from voxseg.nets.build import build_model
from voxseg.nets.device import autocast_context, bf16_is_faster, resolve_amp, resolve_device
from voxseg.nets.transfer import freeze_encoder, replace_head, unfreeze
from voxseg.nets.unet import UNet
from voxseg.nets.vnet import VNet

__all__ = [
    "UNet",
    "VNet",
    "NETWORKS",
    "NetworkSpec",
    "build_network",
    "build_model",
    "resolve_amp",
    "autocast_context",
    "bf16_is_faster",
    "resolve_device",
    "check_spatial_size",
    "shrink_longest_axis",
    "smallest_patch_sides",
    "count_parameters",
    "estimate_flops",
    "estimate_saved_activation_bytes",
    "network_table",
    "freeze_encoder",
    "unfreeze",
    "replace_head",
    "PlainBlock",
    "ResidualBlock",
    "DenseBlock",
    "CBAM",
    "AttentionGate",
    "DilatedBottleneck",
]
