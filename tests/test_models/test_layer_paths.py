"""The backbone's fast paths against a straightforward implementation of the same maths.

The layers run the block's depthwise convs as fused registered ops (the residual, SiLU, LePE's sum
and the gate inside; mmmila.ops.dwconv_tokens), the Downsample's on channels-last views, 1x1 convs
as linear layers, in-place ReLUs, BatchNorm folded in eval mode, and a recomputed Downsample
expansion. Here a plain transcription
(NCHW maps, every op out of place, BatchNorm written out, the attention by the float64 oracle
mmmila.bench.float64_attention) computes the same model in float64, and
outputs, every parameter gradient and the BatchNorm running statistics must agree, in train and
eval mode, at batch 1 and 2, on odd map sizes.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmmila.bench.errors import rel_err
from mmmila.bench.float64_attention import attention_f64
from mmmila.models import MILA
from mmmila.models.backbones.mila import _init_linear_and_norm

from ..conftest import TINY_ARCH, seed_for


# ---- the straightforward implementation ---------------------------------------------------------
def ref_bn(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm2d written out (batch statistics in training, running ones in eval)."""
    if bn.training:
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    shape = (1, -1, 1, 1)
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps) * bn.weight.view(shape) \
        + bn.bias.view(shape)


def ref_conv_layer(layer, x: torch.Tensor) -> torch.Tensor:
    x = layer.conv(x)
    if layer.norm is not None:
        x = ref_bn(layer.norm, x)
    return torch.relu(x) if layer.act is not None else x


def to_map(x, hw):
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *hw).contiguous()


def to_tokens(x):
    return x.flatten(2).transpose(1, 2).contiguous()


def ref_block(blk, x, hw):
    x = x + to_tokens(blk.cpe1(to_map(x, hw)))
    n = blk.norm1(x)
    gate = F.silu(blk.act_proj(n))
    y = F.silu(to_tokens(blk.dwc(to_map(blk.in_proj(n), hw))))
    attn = blk.attn
    y = attention_f64(attn.qk(y), y, hw, attn.num_heads) + to_tokens(attn.lepe(to_map(y, hw)))
    x = x + blk.drop_path(blk.out_proj(y * gate))
    x = x + to_tokens(blk.cpe2(to_map(x, hw)))
    return x + blk.drop_path(blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x)))))


def ref_forward(model: MILA, img: torch.Tensor):
    stem = model.patch_embed
    x = F.pad(img, (0, -img.shape[3] % 4, 0, -img.shape[2] % 4))
    x = ref_conv_layer(stem.conv1, x)
    x = ref_conv_layer(stem.conv2[1], ref_conv_layer(stem.conv2[0], x)) + x
    x = ref_conv_layer(stem.conv3[1], ref_conv_layer(stem.conv3[0], x))
    hw = x.shape[2:]
    x = to_tokens(x)
    outs = []
    for i, stage in enumerate(model.layers):
        for blk in stage.blocks:
            x = ref_block(blk, x, hw)
        if i in model.out_indices:
            out = getattr(model, f'norm{i}')(x)
            outs.append(to_map(out, hw))
        if stage.downsample is not None:
            m = to_map(x, hw)
            m = F.pad(m, (0, m.shape[3] % 2, 0, m.shape[2] % 2))
            for layer in stage.downsample.conv:
                m = ref_conv_layer(layer, m)
            hw = m.shape[2:]
            x = to_tokens(m)
    return outs


# ---- comparisons --------------------------------------------------------------------------------
def build_pair(seed=0, drop_path_rate=0.0):
    torch.manual_seed(seed_for(seed))
    model = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=drop_path_rate).double()
    model.apply(_init_linear_and_norm)
    for m in model.modules():   # non-trivial BatchNorm state, so that eval mode tests the folding
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model, copy.deepcopy(model)


def run(model, fn, img, weights):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed_for(7))   # the same stochastic-depth draws, in the same order, for both
    outs = fn(model, img)
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    return [o.detach() for o in outs]


@pytest.mark.parametrize('train,batch,size,drop_path', [
    (True, 1, (70, 98), 0.0), (False, 1, (70, 98), 0.0), (True, 2, (64, 64), 0.0),
    (False, 2, (64, 64), 0.0), (True, 2, (64, 64), 0.5)])
def test_fast_paths_equal_plain_implementation(train, batch, size, drop_path):
    fast, ref = build_pair(drop_path_rate=drop_path)
    fast.train(train)
    ref.train(train)
    img = torch.rand(batch, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        shapes = [o.shape for o in ref_forward(ref, img)]   # (updates no BatchNorm statistics)
    gen = torch.Generator().manual_seed(seed_for(1))
    weights = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    out_fast = run(fast, lambda m, x: m(x), img, weights)
    out_ref = run(ref, ref_forward, img, weights)
    for i, (a, b) in enumerate(zip(out_fast, out_ref)):
        assert a.shape == b.shape
        assert rel_err(a, b) < 1e-8, f'stage {i} output'   # float64; float32 round-off would be ~1e-6
    grads_ref = {n: p.grad for n, p in ref.named_parameters()}
    scale = max(g.abs().max().item() for g in grads_ref.values())
    for name, p in fast.named_parameters():
        g, g_ref = p.grad, grads_ref[name]
        # biases right before a train-mode BatchNorm have a zero gradient: compare to the largest
        assert (g - g_ref).abs().max().item() <= 1e-7 * max(scale, 1.0), name
        assert g.stride() == p.stride(), f'{name}: grad strides {g.stride()} != {p.stride()}'


def test_batchnorm_running_statistics_move_like_batchnorm2d():
    """The Downsample's and the stem's last BatchNorm run on tokens: the same running statistics
    as BatchNorm2d on the map (computed here with the plain module on a copy of its input)."""
    fast, ref = build_pair()
    fast.train()
    img = torch.rand(2, 3, 64, 96, dtype=torch.float64)
    captured = {}

    def capture(name):
        def hook(module, args):
            x = args[0]
            captured[name] = (x.reshape(x.shape[0], -1, x.shape[1]) if x.shape[2:] == (1, 1) else x).clone()
        return hook

    bns = {n: m for n, m in fast.named_modules() if isinstance(m, nn.BatchNorm2d)}
    before = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in bns.items()}
    for n, m in bns.items():
        m.register_forward_pre_hook(capture(n))
    fast(img)
    for n, m in bns.items():
        x = captured[n]
        flat = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() == 4 else x.reshape(-1, x.shape[-1]).t()
        mean, var = flat.mean(1), flat.var(1, unbiased=True)
        rm, rv = before[n]
        torch.testing.assert_close(m.running_mean, 0.9 * rm + 0.1 * mean, rtol=1e-9, atol=1e-12, msg=n)
        torch.testing.assert_close(m.running_var, 0.9 * rv + 0.1 * var, rtol=1e-9, atol=1e-12, msg=n)
        assert m.num_batches_tracked.item() == 1


def test_inference_mode_equals_autograd_forward():
    """The in-place paths taken without autograd give the same features as the autograd ones."""
    model, _ = build_pair()
    model.eval()
    img = torch.rand(1, 3, 66, 90, dtype=torch.float64)
    with torch.inference_mode():
        a = model(img)
    b = model(img.requires_grad_())
    for x, y in zip(a, b):
        assert rel_err(x, y.detach()) < 1e-12


def test_depthwise_weight_grads_keep_parameter_strides():
    """A channels-last weight gradient with other strides than its (C, 1, 3, 3) parameter makes
    DDP warn 'Grad strides do not match bucket view strides' and copy it every step."""
    torch.manual_seed(seed_for(0))
    model = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0).train()
    sum(o.mean() for o in model(torch.rand(2, 3, 64, 64))).backward()
    depthwise = [n for n, p in model.named_parameters() if p.dim() == 4 and p.shape[1] == 1]
    assert len(depthwise) >= 4 * sum(TINY_ARCH['depths'])
    bad = [(n, p.grad.stride(), p.stride()) for n, p in model.named_parameters()
           if p.grad is not None and p.grad.stride() != p.stride()]
    assert bad == []


def test_ddp_does_not_warn_about_grad_strides(tmp_path, recwarn):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        torch.manual_seed(seed_for(0))
        model = DistributedDataParallel(MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0))
        for _ in range(2):
            model.zero_grad()
            sum(o.mean() for o in model(torch.rand(2, 3, 64, 64))).backward()
    finally:
        dist.destroy_process_group()
    assert not [w for w in recwarn if 'Grad strides do not match' in str(w.message)]
