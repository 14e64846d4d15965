"""One shared contract for every registered network, plus oracles (MONAI DynUNet) and hand-computed counts."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from voxseg.nets import lean
from voxseg.nets import (
    NETWORKS,
    UNet,
    VNet,
    build_network,
    count_parameters,
    estimate_flops,
    freeze_encoder,
    network_table,
    replace_head,
    unfreeze,
)

SMALL = {"base_width": 4, "depth": 3}  # size_divisor 4 on every axis
CASES = [(name, dims) for name, spec in NETWORKS.items() for dims in spec.spatial_dims]
IN_CH, OUT_CH = 2, 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks run fastest on one thread (and do not fight other processes for the two cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small(name: str, dims: int, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return build_network(name, dims, IN_CH, OUT_CH, **{**SMALL, **kw})


def _input(dims: int, size: int = 16, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, IN_CH, *([size] * dims), generator=torch.Generator().manual_seed(seed))


def _as_list(out) -> list[torch.Tensor]:
    return out if isinstance(out, list) else [out]


# ---------------------------------------------------------------- shared contract, every preset


@pytest.mark.parametrize("name,dims", CASES)
def test_forward_shape(name, dims):
    net = _small(name, dims).eval()
    assert net.size_divisor == (4,) * dims
    with torch.no_grad():
        out = net(_input(dims))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, OUT_CH, *([16] * dims))


@pytest.mark.parametrize("name,dims", CASES)
def test_backward_gives_finite_grads_everywhere(name, dims):
    net = _small(name, dims).train()
    loss = sum(o.float().square().mean() for o in _as_list(net(_input(dims))))
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name,dims", CASES)
def test_bad_input_size_names_allowed_sizes(name, dims):
    net = _small(name, dims).eval()
    x = torch.randn(1, IN_CH, *([16] * (dims - 1)), 18)
    with pytest.raises(ValueError, match=r"spatial size 18 .*not a multiple of 4; allowed: 4, 8, 12"):
        net(x)


@pytest.mark.parametrize("name,dims", CASES)
def test_state_dict_round_trip_and_eval_determinism(name, dims):
    net = _small(name, dims, seed=0).eval()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    other = _small(name, dims, seed=123).eval()
    other.load_state_dict(torch.load(buf, weights_only=True))
    x = _input(dims)
    with torch.no_grad():
        a, b, c = net(x), net(x), other(x)
    assert torch.equal(a, b)
    assert torch.equal(a, c)


@pytest.mark.parametrize("name,dims", CASES)
def test_deep_supervision_list_only_in_train_mode(name, dims):
    if name == "vnet":
        pytest.skip("V-Net (as in the paper) has no deep supervision")
    kw = {} if NETWORKS[name].defaults.get("deep_supervision") else {"deep_supervision": True}
    net = _small(name, dims, **kw).train()
    outs = net(_input(dims))
    assert isinstance(outs, list)
    sizes = [o.shape[2] for o in outs]
    # depth 3: decoder outputs at 1 and 1/2; a dilated bottleneck adds a head at 1/4.
    expected = [16, 8, 4] if NETWORKS[name].defaults.get("dilated_bottleneck") else [16, 8]
    assert sizes == expected
    assert all(o.shape[:2] == (2, OUT_CH) for o in outs)
    net.eval()
    with torch.no_grad():
        single = net(_input(dims))
    assert isinstance(single, torch.Tensor) and single.shape[2] == 16


@pytest.mark.parametrize("name,dims", CASES)
def test_forward_under_bf16_autocast(name, dims):
    net = _small(name, dims).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(_input(dims, batch=1))
    assert out.shape == (1, OUT_CH, *([16] * dims))
    assert torch.isfinite(out.float()).all()


def test_preset_dims_restriction_is_explained():
    with pytest.raises(ValueError, match=r"3-D-only paper.*Çiçek"):
        build_network("cicek3d", 2, 1, 2)
    with pytest.raises(ValueError, match=r"2-D-only paper"):
        build_network("buda2d", 3, 1, 2)
    with pytest.raises(ValueError, match=r"unknown network 'nope'; available: unet"):
        build_network("nope", 3, 1, 2)
    with pytest.raises(ValueError, match=r"no option\(s\) widht"):
        build_network("unet", 3, 1, 2, widht=3)


def test_registry_entries_have_references_and_defaults():
    assert set(NETWORKS) == {
        "unet", "nnunet3d", "cicek3d", "buda2d", "henry3d", "resunet", "denseunet", "attention_unet",
        "cbam_unet", "vnet",
    }
    for spec in NETWORKS.values():
        assert spec.reference and spec.name
    net = build_network("unet", 3, 1, 2)
    assert net.widths == (32, 64, 128, 256, 320) and net.size_divisor == (16, 16, 16)
    assert build_network("unet", 2, 1, 2).widths == (32, 64, 128, 256, 512)
    assert build_network("henry3d", 3, 4, 3).widths == (48, 96, 192, 384)
    assert build_network("buda2d", 2, 4, 4).widths == (32, 64, 128, 256, 512)


# ---------------------------------------------------------------- options of UNet


@pytest.mark.parametrize(
    "kw",
    [
        {"norm": "group", "activation": "prelu", "up": "interp", "down": "maxpool"},
        {"norm": "batch", "activation": "relu", "dropout": 0.2, "dropout_where": "both"},
        {"block": "residual", "attention": "gate", "dilated_bottleneck": True, "deep_supervision": True},
        {"block": "dense", "attention": "cbam", "up": "interp"},
        {"depth": 4, "max_width": 12},
    ],
)
def test_unet_option_combinations_2d(kw):
    torch.manual_seed(0)
    net = UNet(2, IN_CH, OUT_CH, **{**SMALL, **kw}).train()
    outs = _as_list(net(_input(2)))
    assert outs[0].shape == (2, OUT_CH, 16, 16)
    sum(o.mean() for o in outs).backward()
    if "max_width" in kw:
        assert net.widths == (4, 8, 12, 12)


def test_anisotropic_strides_set_size_divisor():
    net = UNet(3, 1, 2, base_width=4, depth=3, strides=[(1, 2, 2), (2, 2, 2)], kernel_sizes=[(1, 3, 3), 3, 3])
    assert net.size_divisor == (2, 4, 4)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 6, 8, 12)).shape == (1, 2, 6, 8, 12)
    with pytest.raises(ValueError, match=r"spatial size 5 .*not a multiple of 2; allowed: 2, 4, 6"):
        net(torch.randn(1, 1, 5, 8, 12))


def test_size_error_message_for_the_default_unet():
    net = build_network("unet", 3, 1, 2, base_width=4)
    with pytest.raises(ValueError, match=r"spatial size 30 .*not a multiple of 16; allowed: 16, 32, 48"):
        net(torch.randn(1, 1, 32, 30, 32))
    with pytest.raises(ValueError, match="expected 1 input channels"):
        net(torch.randn(1, 2, 32, 32, 32))


@pytest.mark.parametrize("kw", [{"depth": 2}, {"depth": 7}, {"norm": "layer"}, {"block": "nope"}, {"strides": [2]}])
def test_unet_rejects_bad_options(kw):
    with pytest.raises(ValueError):
        UNet(3, 1, 2, **{**SMALL, **kw})


def test_bf16_autocast_forward_default_unet():
    net = build_network("unet", 3, IN_CH, OUT_CH, base_width=8, depth=3).eval()
    x = _input(3, size=16, batch=1)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert torch.isfinite(out.float()).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.1


def test_vnet_follows_the_paper_layout():
    net = VNet(3, 1, 2)
    assert net.widths == (16, 32, 64, 128, 256) and net.size_divisor == (16, 16, 16)
    # convs per encoder stage 1, 2, 3, 3, 3 (5x5x5) + 4 down-convs (2x2x2)
    n5 = sum(1 for m in net.encoder_stages.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (5, 5, 5))
    assert n5 == 12
    assert any(isinstance(m, nn.PReLU) for m in net.modules())


# ---------------------------------------------------------------- oracle: MONAI DynUNet


def _dynunet(depth: int, widths, res_block: bool, deep_supr_num: int = 0, in_ch=IN_CH, out_ch=OUT_CH):
    DynUNet = pytest.importorskip("monai.networks.nets").DynUNet  # the oracle alone skips without MONAI

    return DynUNet(
        spatial_dims=3,
        in_channels=in_ch,
        out_channels=out_ch,
        kernel_size=[3] * depth,
        strides=[1] + [2] * (depth - 1),
        upsample_kernel_size=[2] * (depth - 1),
        filters=list(widths),
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=deep_supr_num > 0,
        deep_supr_num=max(deep_supr_num, 1),
        res_block=res_block,
    )


@pytest.mark.parametrize(
    "name,res_block,ds", [("unet", False, 0), ("nnunet3d", False, 3), ("resunet", True, 0)]
)
def test_parameter_count_matches_monai_dynunet(name, res_block, ds):
    # Both omit conv biases before a norm and in the transposed convs; heads have a bias. DynUNet's
    # res_block=False stage is two conv-norm-lrelu, as ours; res_block=True is our ResidualBlock.
    with torch.device("meta"):
        ours = build_network(name, 3, 4, 3)
        ref = _dynunet(5, ours.widths, res_block, ds, in_ch=4, out_ch=3)
    extra = 0
    if res_block:
        # DynUNet (like nnU-Net's ResidualEncoderUNet) is residual in the encoder only; Drozdzal et al. and
        # our "resunet" also use residual decoder stages, whose 2C -> C change of width needs a 1x1
        # conv (no bias) + norm (2C affine parameters) shortcut per decoder level.
        extra = sum(2 * c * c + 2 * c for c in ours.widths[:-1])
    assert count_parameters(ours) == count_parameters(ref) + extra


def test_unet_output_matches_monai_dynunet_with_same_weights():
    torch.manual_seed(0)
    ours = build_network("unet", 3, IN_CH, OUT_CH, base_width=4, depth=4).eval()
    ref = _dynunet(4, ours.widths, res_block=False).eval()
    # Freshly built norms hold weight 1 and bias 0, under which a weight/bias (or norm1/norm2) swap in the
    # mapping below would pass unseen: give every norm weight and bias its own value. Both networks use
    # affine instance norm, which keeps no running statistics, so the parameters are all there is to map.
    norms = [m for m in ours.modules() if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm))]
    assert norms and all(m.affine and m.running_mean is None for m in norms)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 1.5 + 0.25)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)
    # Our parameter order: encoder stages, up-convs (deepest first), decoder blocks, head; within a
    # stage conv1, norm1, conv2, norm2 (DynUNet registers both convs before the norms).
    def block(b):
        return [b.conv1.conv.weight, b.norm1.weight, b.norm1.bias, b.conv2.conv.weight, b.norm2.weight, b.norm2.bias]

    ref_params = [p for b in [ref.input_block, *ref.downsamples, ref.bottleneck] for p in block(b)]
    ref_params += [up.transp_conv.conv.weight for up in ref.upsamples]
    ref_params += [p for up in ref.upsamples for p in block(up.conv_block)]
    ref_params += list(ref.output_block.parameters())
    ours_params = list(ours.parameters())
    assert [p.shape for p in ref_params] == [p.shape for p in ours_params]
    with torch.no_grad():
        for p_ref, p_ours in zip(ref_params, ours_params):
            p_ref.copy_(p_ours)
        # float64: float32 kernels differ by ~1.5e-5 here between CPUs (oneDNN picks other algorithms on AMX),
        # while the same wiring in float64 agrees to ~1e-13.
        x = _input(3, size=16, batch=1).double()
        assert torch.allclose(ours.double()(x), ref.double()(x), rtol=0, atol=1e-10)


# ---------------------------------------------------------------- info


def test_count_parameters_and_flops_by_hand():
    conv = nn.Conv3d(2, 4, 3, padding=1)  # 4*2*27 weights + 4 biases
    assert count_parameters(conv) == 220
    # MACs = output voxels (8**3) * C_out (4) * C_in (2) * 27; FLOPs = 2 x MACs (bias adds not counted)
    assert estimate_flops(conv, (2, 8, 8, 8)) == 2 * 8**3 * 4 * 2 * 27
    up = nn.ConvTranspose3d(4, 2, 2, stride=2, bias=False)  # every input voxel: 4*2*8 MACs
    assert count_parameters(up) == 64
    assert estimate_flops(up, (4, 4, 4, 4)) == 2 * 4**3 * 4 * 2 * 8
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    assert estimate_flops(net, (3, 2, 2)) == 2 * 12 * 5
    conv.weight.requires_grad_(False)
    assert count_parameters(conv, trainable_only=True) == 4


def test_estimate_flops_keeps_the_model_intact():
    net = _small("nnunet3d", 3).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flops = estimate_flops(net, (IN_CH, 16, 16, 16))
    assert flops > 0 and net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_network_table_lists_presets():
    table = network_table(["unet", "vnet", "buda2d"], (32, 32), 1, 2, base_width=4, depth=3)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["network", "params"]
    assert "unet" in lines[2] and "vnet" in table and "3-D only" in table and "buda2d" in table


# ---------------------------------------------------------------- transfer learning


def test_freeze_encoder_keeps_frozen_norms_in_eval_and_grads_off():
    net = _small("cicek3d", 3)  # batch norm: running stats must not move when frozen
    freeze_encoder(net, 2)
    net.train()
    frozen_bn = [m for s in net.encoder_stages[:2] for m in s.modules() if isinstance(m, nn.BatchNorm3d)]
    free_bn = [m for s in net.encoder_stages[2:] for m in s.modules() if isinstance(m, nn.BatchNorm3d)]
    assert frozen_bn and all(not m.training for m in frozen_bn)
    assert free_bn and all(m.training for m in free_bn)
    stats = [m.running_mean.clone() for m in frozen_bn]
    net(_input(3)).mean().backward()
    assert all(torch.equal(s, m.running_mean) for s, m in zip(stats, frozen_bn))
    for p in net.encoder_stages[:2].parameters():
        assert not p.requires_grad and p.grad is None
    assert all(p.grad is not None for p in net.encoder_stages[2].parameters())
    unfreeze(net)
    assert all(p.requires_grad for p in net.parameters())
    assert all(m.training for m in frozen_bn)
    with pytest.raises(ValueError, match="between 0 and 3"):
        freeze_encoder(net, 4)


def test_replace_head_changes_every_output():
    net = _small("nnunet3d", 3)
    replace_head(net, 5)
    assert net.out_channels == 5
    outs = net.train()(_input(3))
    assert [o.shape[1] for o in outs] == [5, 5]
    vnet = replace_head(_small("vnet", 3), 1)
    with torch.no_grad():
        assert vnet.eval()(_input(3)).shape[1] == 1


# ---------------------------------------------------------------- torch.compile (one small network)


def test_torch_compile_graph_capture():
    torch._dynamo.reset()
    net = _small("unet", 2).eval()
    x = _input(2)
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    with torch.no_grad():
        # The traced graph is the plain path; eager inference takes the lean path (same maths, other
        # summation order), hence 1e-4.
        assert torch.allclose(compiled(x), net(x), atol=1e-4)


@pytest.mark.slow
def test_torch_compile_inductor():
    torch._dynamo.reset()
    net = _small("unet", 2).eval()
    x = _input(2)
    compiled = torch.compile(net)
    with torch.no_grad():
        assert torch.allclose(compiled(x), net(x), atol=1e-4)


def _eval_net_with_running_stats(name: str) -> tuple[nn.Module, int]:
    """A seeded preset in eval mode (3-D where it exists), its batch norms given non-trivial running statistics."""
    dims = 3 if 3 in NETWORKS[name].spatial_dims else 2
    torch.manual_seed(0)
    net = build_network(name, dims, 2, 3, **({} if name == "vnet" else {"base_width": 8}))
    for module in net.modules():
        if getattr(module, "running_mean", None) is not None:
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval(), dims


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_lean_inference_path_matches_plain_path(name, monkeypatch):
    """Eval + no autograd takes the memory-lean path (slabbed convs, split concatenation, in-place
    norms); it must give the plain path's output. Batch norm gets non-trivial running statistics."""
    net, dims = _eval_net_with_running_stats(name)
    x = torch.randn(2, 2, *([32] * dims))
    with torch.enable_grad():
        plain = net(x).detach()
    monkeypatch.setattr(lean, "SLAB_BYTES", 64 * 1024)  # force many slabs, with halos at both borders
    with torch.inference_mode():
        out = net(x)
    assert out.shape == plain.shape
    assert torch.allclose(out, plain, atol=1e-4, rtol=1e-4), float((out - plain).abs().max())


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_lean_conv_equals_conv_of_concatenation(stride, dilation, monkeypatch):
    torch.manual_seed(1)
    conv = torch.nn.Conv3d(5, 4, 3, stride=stride, padding=dilation, dilation=dilation, bias=True)
    a, b = torch.randn(1, 3, 13, 10, 9), torch.randn(1, 2, 13, 10, 9)
    ref = conv(torch.cat([a, b], 1)).detach()
    monkeypatch.setattr(lean, "SLAB_BYTES", 1024)
    with torch.inference_mode():
        parts = [a, b]
        out = lean.lean_conv(conv, parts)
    assert parts == []  # the inputs are released
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_bf16_inference_copy_is_as_close_to_fp32_as_autocast(name):
    """``inference_precision("bf16")`` on a CPU predicts large windows with a bf16 copy (the lean path): its
    logits must be about as close to fp32 as autocast's, its norms keep float32 statistics, and the model
    itself is left in float32."""
    from voxseg.infer import inference_precision

    net, dims = _eval_net_with_running_stats(name)
    x = torch.randn(1, 2, *([32] * dims))
    same, dtype, _ = inference_precision(net, "bf16", torch.device("cpu"), window_voxels=32 ** dims)
    assert same is net and dtype == torch.float32  # a small window: autocast, faster there
    copy, dtype, context = inference_precision(net, "bf16", torch.device("cpu"), window_voxels=10 ** 8)
    assert copy is not net and dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in net.parameters())
    norms = [m for m in copy.modules() if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm))]
    assert all(p.dtype == torch.float32 for m in norms for p in [*m.parameters(), *m.buffers()] if p.is_floating_point())
    with torch.inference_mode():
        ref = net(x)
        with context:
            out = copy(x.to(dtype)).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = net(x).float()
    err, auto_err = float((out - ref).abs().mean()), float((auto - ref).abs().mean())
    assert err <= 2 * auto_err + 1e-3, (err, auto_err)
    assert float((out - ref).abs().max()) < 0.1 * float(ref.abs().max()) + 0.1
