"""The MILA backbone: arguments, shapes at any size, training flags, sizes, mixed precision."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from mmmila.models import MILA
from mmmila.ops import rope2d_cos_sin

from ..conftest import TINY_ARCH


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('arch,expected', [('tiny', 24.39), ('small', 43.02), ('base', 95.98)])
def test_param_count_with_1000_class_head(arch, expected):
    model = MILA(arch=arch, out_indices=(3,))
    width = model.embed_dims[3]
    total = n_params(model) + width * 1000 + 1000  # + the linear classification head
    assert round(total / 1e6, 2) == expected


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='huge'), 'unknown MILA arch'),
    (dict(arch=dict(embed_dims=64, depths=(1, 1, 1))), 'exactly the keys'),
    (dict(arch=dict(embed_dims=64, depths=(1, 1, 1), num_heads=(2, 4, 8, 16))), '4 entries'),
    (dict(arch=dict(embed_dims=64, depths=(1, 1, 1, 1), num_heads=(3, 4, 8, 16))), 'not divisible'),
    (dict(out_indices=(4,)), 'out of range'),
    (dict(out_indices=(0, -4)), 'duplicates'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(attn_backend='cuda'), 'attn_backend'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MILA(**kwargs)


def test_arch_aliases_and_dict():
    assert MILA(arch='T').arch == MILA(arch='tiny').arch
    model = MILA(arch=TINY_ARCH, out_indices=(-1, 0))
    assert model.out_indices == (0, 3)
    assert hasattr(model, 'norm0') and hasattr(model, 'norm3') and not hasattr(model, 'norm1')


@pytest.mark.parametrize('size', [(32, 32), (33, 47), (64, 64), (100, 150), (97, 61)])
def test_any_input_size(size):
    model = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3)).eval()
    h, w = size
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    for i, out in enumerate(outs):
        s = 2 ** (i + 2)
        assert out.shape == (1, 32 * 2**i, -(-h // s), -(-w // s))


def test_frozen_stages_and_norm_eval():
    model = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), frozen_stages=2, norm_eval=True)
    model.train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.layers[1].parameters())
    assert not any(p.requires_grad for p in model.norm1.parameters())
    assert all(p.requires_grad for p in model.layers[2].parameters())
    assert not model.layers[0].training and model.layers[2].training
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


def test_with_cp_matches_plain_forward_and_backward():
    plain = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    cp = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 48)
    outs = [sum(o.sum() for o in m.train()(x)) for m in (plain, cp)]
    for o in outs:
        o.backward()
    torch.testing.assert_close(outs[0], outs[1])
    g_plain = plain.layers[0].blocks[0].attn.qk.weight.grad
    g_cp = cp.layers[0].blocks[0].attn.qk.weight.grad
    torch.testing.assert_close(g_plain, g_cp)


def test_drop_path_schedule_rises_linearly():
    model = MILA(arch='tiny', drop_path_rate=0.3)
    rates = [b.drop_path.drop_prob for stage in model.layers for b in stage.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3) and rates == sorted(rates)
    assert len(rates) == 18


def _autocast_forward_backward(dtype, size):
    model = MILA(arch=dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
                 out_indices=(0, 1, 2, 3)).train()
    x = torch.randn(1, 3, size, size) * 4
    with torch.autocast('cpu', dtype=dtype):
        outs = model(x)
        loss = sum(o.float().pow(2).mean() for o in outs)
    loss.backward()
    assert all(torch.isfinite(o).all() for o in outs)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_small_model_is_finite(dtype):
    _autocast_forward_backward(dtype, 64)


@pytest.mark.slow
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_many_tokens_is_finite(dtype):
    """512x512 gives 16,384 first-stage tokens; sums in low precision would overflow."""
    _autocast_forward_backward(dtype, 512)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_attention_in_low_precision_with_many_tokens(dtype):
    """16,384 tokens of large positive k: a float16 token sum would overflow; ours stays finite."""
    from mmmila.ops import mila_linear_attention, mila_linear_attention_ref
    qk = (torch.rand(1, 16384, 128) * 8).to(dtype).requires_grad_()
    v = torch.randn(1, 16384, 64).to(dtype).requires_grad_()
    out = mila_linear_attention(qk, v, (128, 128), 2, backend='torch')
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(qk.grad).all() and torch.isfinite(v.grad).all()
    ref = mila_linear_attention_ref(qk.detach().float(), v.detach().float(), (128, 128), 2)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


def test_rope_tables_cached_per_size_and_float32():
    a = rope2d_cos_sin(7, 9, 64, torch.device('cpu'))
    b = rope2d_cos_sin(7, 9, 64, torch.device('cpu'))
    c = rope2d_cos_sin(9, 7, 64, torch.device('cpu'))
    assert a[0] is b[0] and a[0].shape == (63, 32) and a[0].dtype == torch.float32
    assert not torch.equal(a[0], c[0])
    # pair 0 rotates by the row index, pair C/4 by the column index (theta_0 = 1)
    cos = a[0].view(7, 9, 32)
    torch.testing.assert_close(cos[:, 0, 0], torch.cos(torch.arange(7.0)))
    torch.testing.assert_close(cos[0, :, 16], torch.cos(torch.arange(9.0)))
