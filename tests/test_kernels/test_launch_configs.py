"""Every launch configuration a GPU can pick, run by the interpreter against the float64 oracle.

``all_block_params()`` is the finite set the defaults and the autotuner choose from; on the
interpreter only the tile sizes (map ``block_n`` x reduction ``reduce_block_n``) and the chunking
change what the kernels compute (warps and pipelining stages are the compiler's business, checked by
test_compile.py). Each tile pair runs in each chunking regime: one chunk, more chunks than a group
(CHUNK_GROUP = 8: two levels of sums, the last group short) with a ragged last chunk, and a map
smaller than every tile; one case has many groups. The default
suite runs every pair in float32 and the defaults of each pass in 16-bit; the slow suite runs every
pair and regime in 16-bit.
"""
from __future__ import annotations

import pytest
import torch

from mmmila.kernels import all_block_params, default_params, launch_config
from mmmila.kernels.linear_attn_bwd import mila_attn_bwd
from mmmila.kernels.linear_attn_fwd import mila_attn_fwd
from mmmila.ops import mila_linear_attention_ref

from ..test_ops.helpers import assert_flash_rule, assert_rel_close, float64_truth, make_inputs, outputs_and_grads
from .helpers import stored_as

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
TILE_PAIRS = sorted({(p.block_n, p.reduce_block_n) for p in all_block_params()})
# regime: (batch, (H, W), heads, num_chunks asked for); 'many chunks, ragged' has N = 10 tiles of
# the reduction + 10 tokens (170, 330, 650 for 16-, 32- and 64-token tiles), one tile per chunk.
REGIMES = {
    'one chunk': lambda rb: (2, (7, 11), 2, 1),
    'many chunks, ragged': lambda rb: (1, {16: (10, 17), 32: (15, 22), 64: (25, 26)}[rb], 1, 11),
    'map below a tile': lambda rb: (2, (3, 5), 2, None),
}


def _params(tiles, dtype, kind='fwd'):
    """The defaults of the pass with the map and reduction tiles replaced."""
    from dataclasses import replace
    return replace(default_params(kind, dtype), block_n=tiles[0], reduce_block_n=tiles[1])


def _run(qk, v, g, hw, nh, num_chunks, params):
    """(out, dqk, dv) of the launchers with these parameters, and the configuration used."""
    B, N, C = v.shape
    cfg = launch_config(N, B * nh, C // nh, qk.dtype, qk.device, num_chunks, params=params)
    out, s, m = mila_attn_fwd(qk, v, hw, nh, cfg)
    dqk, dv = mila_attn_bwd(g, qk, v, s, m, hw, nh, cfg)
    return (out, dqk, dv), cfg


def _check_regime(regime, cfg, n):
    if regime == 'one chunk':
        assert cfg.num_chunks == 1
    elif regime == 'many chunks, ragged':   # two groups of chunks: 8 and 3
        assert cfg.num_chunks == 11 and cfg.chunk_tokens == cfg.reduce_block_n and n % cfg.chunk_tokens == 10
    else:
        assert n < cfg.block_n and n < cfg.reduce_block_n


def _float32_case(tiles, regime):
    batch, hw, nh, chunks = REGIMES[regime](tiles[1])
    qk, v, g = make_inputs(batch, hw, nh, device=DEVICE)
    got, cfg = _run(qk, v, g, hw, nh, chunks, _params(tiles, torch.float32))
    _check_regime(regime, cfg, hw[0] * hw[1])
    for name, a, b in zip(('out', 'dqk', 'dv'), got, float64_truth(qk, v, g, hw, nh)):
        assert a.dtype == torch.float32
        assert_rel_close(f'{name} {tiles} {regime}', a, b, 1e-4)


def _half_case(tiles_by_pass, regime, dtype):
    batch, hw, nh, chunks = REGIMES[regime](tiles_by_pass['fwd'].reduce_block_n)
    qk, v, g = make_inputs(batch, hw, nh, dtype=dtype, device=DEVICE, scale=3.0)
    B, N, C = v.shape
    fwd_cfg = launch_config(N, B * nh, 32, dtype, qk.device, chunks, params=tiles_by_pass['fwd'])
    bwd_cfg = launch_config(N, B * nh, 32, dtype, qk.device, chunks, params=tiles_by_pass['bwd'])
    out, s, m = mila_attn_fwd(qk, v, hw, nh, fwd_cfg)
    dqk, dv = mila_attn_bwd(g, qk, v, s, m, hw, nh, bwd_cfg)
    _check_regime(regime, fwd_cfg, N)
    _check_regime(regime, bwd_cfg, N)
    lowp = outputs_and_grads(mila_linear_attention_ref, qk, v, g, hw, nh)
    truth = float64_truth(qk, v, g, hw, nh)
    for name, a, b, c in zip(('out', 'dqk', 'dv'), (out, dqk, dv), lowp, truth):
        assert a.dtype == dtype
        assert_flash_rule(f'{name} {regime}', a, b, c, rtol=2e-2, stored=stored_as(c, dtype))


def test_many_groups_of_chunks():
    """70 chunks: nine groups (eight of 8, one of 6), whose sums the last group adds in two blocks."""
    hw = (2, 557)   # N = 1114 = 69 tiles of 16 + 10 tokens
    qk, v, g = make_inputs(1, hw, 1, device=DEVICE)
    got, cfg = _run(qk, v, g, hw, 1, 70, _params((64, 16), torch.float32))
    assert cfg.num_chunks == 70 and cfg.records == 79 and cfg.counters == 10
    for name, a, b in zip(('out', 'dqk', 'dv'), got, float64_truth(qk, v, g, hw, 1)):
        assert_rel_close(f'{name} 70 chunks', a, b, 1e-4)


def test_the_tuning_space_is_finite_and_holds_the_defaults():
    params = all_block_params()
    assert len(params) == len(set(params)) and len(TILE_PAIRS) == 9
    for kind in ('fwd', 'bwd'):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            assert default_params(kind, dtype) in params


@pytest.mark.parametrize('regime', list(REGIMES))
@pytest.mark.parametrize('tiles', TILE_PAIRS)
def test_float32_every_tile_pair(tiles, regime):
    _float32_case(tiles, regime)


@pytest.mark.parametrize('regime', list(REGIMES))
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_defaults(dtype, regime):
    _half_case({kind: default_params(kind, dtype) for kind in ('fwd', 'bwd')}, regime, dtype)


@pytest.mark.slow
@pytest.mark.parametrize('regime', list(REGIMES))
@pytest.mark.parametrize('tiles', TILE_PAIRS)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_every_tile_pair(dtype, tiles, regime):
    _half_case({kind: _params(tiles, dtype, kind) for kind in ('fwd', 'bwd')}, regime, dtype)
