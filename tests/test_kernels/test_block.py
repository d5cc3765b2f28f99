"""A whole MILA block with each backend (the attention and the depthwise-conv ops): same outputs and
parameter gradients."""
from __future__ import annotations

import copy

import pytest
import torch

import mmmila.models.layers.attention as attention_module
from mmmila.models.layers import MILABlock
from mmmila.ops import mila_linear_attention_ref

from ..conftest import seed_for
from ..test_ops.helpers import AttentionOpsSeen, assert_rel_close

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def _block_run(block, x, hw):
    x = x.detach().clone().requires_grad_()
    out = block(x, hw)
    out.backward(torch.ones_like(out) * 0.1 + out.detach() * 0.5)   # a loss that is not linear
    grads = {name: p.grad.detach().clone() for name, p in block.named_parameters()}
    return out.detach(), x.grad, grads


@pytest.fixture
def blocks():
    """The same randomly initialised block (C = 64, 2 heads) with each backend."""
    torch.manual_seed(seed_for(0))
    base = MILABlock(64, 2, attn_backend='torch').to(DEVICE)
    with torch.no_grad():   # non-trivial biases and LePE so that every gradient is exercised
        for p in base.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    out = {}
    for backend in ('torch', 'triton'):
        block = copy.deepcopy(base)
        # the block's ops, the attention's and the MLP's
        block.backend = block.attn.backend = block.mlp.backend = backend
        out[backend] = block
    return out


@pytest.mark.parametrize('hw', [(5, 7), (9, 8)])
def test_block_triton_vs_torch_vs_reference(blocks, hw, monkeypatch):
    x = torch.randn(2, hw[0] * hw[1], 64, device=DEVICE)
    with AttentionOpsSeen() as ops:
        tri = _block_run(blocks['triton'], x, hw)
    assert ops.seen == ['triton']
    with AttentionOpsSeen() as ops:
        fused = _block_run(blocks['torch'], x, hw)
    assert ops.seen == ['torch']
    monkeypatch.setattr(attention_module, 'mila_linear_attention',
                        lambda qk, v, hw_, nh, backend: mila_linear_attention_ref(qk, v, hw_, nh))
    ref = _block_run(copy.deepcopy(blocks['torch']), x, hw)
    for label, run in (('triton', tri), ('torch', fused)):
        assert_rel_close(f'{label} block output', run[0], ref[0], 1e-4)
        assert_rel_close(f'{label} input grad', run[1], ref[1], 1e-4)
        assert run[2].keys() == ref[2].keys()
        for name, grad in ref[2].items():
            assert_rel_close(f'{label} grad of {name}', run[2][name], grad, 1e-4)


@pytest.mark.parametrize('backend', ['torch', 'triton'])
def test_autocast_casts_only_linear_weights_once(blocks, backend):
    """Under bf16 autocast a block on bf16 tokens casts only what its plain linear layers (``qk`` and
    ``out_proj``) need: their weights and biases once each in forward, and their gradients back once
    each in backward. The activations stay bf16 and the LayerNorm scales are read in float32.
    The Triton kernels of the chain ops read every other parameter (the other four linear layers,
    the depthwise kernels and biases) in float32 and cast nothing. The PyTorch implementations
    need the chain's linear weights and biases in bf16 (weights' gradients cast back; the biases'
    are summed straight into float32) and the convolutions' kernels and biases too (cast once per
    forward, their gradients back)."""
    from mmmila.bench.launches import count_launches

    block = blocks[backend]
    x = torch.randn(1, 48, 64, device=DEVICE).bfloat16().requires_grad_()

    def step():
        block.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            y = block(x, (6, 8))
        y.mean().backward()
        return y

    assert step().dtype == torch.bfloat16
    linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
    convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(linears) == 6 and len(convs) == 4
    plain = [block.attn.qk, block.out_proj]
    expected = 4 * len(plain)
    if backend == 'torch':
        chain = len(linears) - len(plain)
        expected += 3 * chain + 2 * 2 * len(convs)
    assert count_launches(step).casts == expected
    assert all(p.grad.dtype == torch.float32 for p in block.parameters())
