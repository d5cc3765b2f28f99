"""The one check of the attention's inputs: every entry point gives the same sentence for each bad input."""
from __future__ import annotations

import re

import pytest
import torch

from mmmila.kernels import mila_linear_attention_triton
from mmmila.ops import (check_attention_inputs, choose_backend, mila_linear_attention,
                        mila_linear_attention_cpu, mila_linear_attention_ref)

B, HW, NH, C = 1, (4, 4), 2, 64

ENTRY_POINTS = {
    'check_attention_inputs': check_attention_inputs,
    'choose_backend': choose_backend,
    "mila_linear_attention(backend='auto')": mila_linear_attention,
    "mila_linear_attention(backend='torch')": lambda *a: mila_linear_attention(*a, backend='torch'),
    "mila_linear_attention(backend='triton')": lambda *a: mila_linear_attention(*a, backend='triton'),
    'mila_linear_attention_ref': mila_linear_attention_ref,
    'mila_linear_attention_cpu': mila_linear_attention_cpu,
    'mila_linear_attention_triton': mila_linear_attention_triton,
}


def _inputs(channels=C):
    return torch.zeros(B, HW[0] * HW[1], 2 * channels), torch.zeros(B, HW[0] * HW[1], channels)


def _bad_inputs():
    """{case: ((qk, v, hw, num_heads), exception type, the whole message)}."""
    qk, v = _inputs()
    qk6, v6 = _inputs(6)
    return {
        'v not 3-D': ((qk, v[0], HW, NH), ValueError, 'v must be (B, N, C), got shape (16, 64)'),
        'qk not (B, N, 2C)': ((qk[..., :-2], v, HW, NH), ValueError,
                              'qk must be (B, N, 2C) = (1, 16, 128) for v of shape (1, 16, 64), '
                              'got (1, 16, 126)'),
        'qk of another batch': ((torch.cat([qk, qk]), v, HW, NH), ValueError,
                                'qk must be (B, N, 2C) = (1, 16, 128) for v of shape (1, 16, 64), '
                                'got (2, 16, 128)'),
        'integer qk': ((qk.long(), v, HW, NH), ValueError,
                       'qk must be a floating-point tensor, got dtype torch.int64'),
        'v on another device': ((qk, v.to('meta'), HW, NH), ValueError, 'qk is on cpu but v is on meta'),
        'hw not (H, W)': ((qk, v, (16,), NH), ValueError, 'hw must be the map size (H, W), got (16,)'),
        'H * W != N': ((qk, v, (4, 5), NH), ValueError,
                       'map size H x W = 4 x 5 does not match N=16 tokens'),
        'heads not dividing C': ((qk, v, HW, 3), ValueError,
                                 'channels C=64 are not divisible by num_heads=3'),
        'no heads': ((qk, v, HW, 0), ValueError, 'channels C=64 are not divisible by num_heads=0'),
        'odd head dim': ((qk, v, HW, 64), ValueError,
                         'head dim C / num_heads = 64 / 64 = 1 must be even (RoPE rotates channel pairs)'),
        'C not a multiple of 4': ((qk6, v6, HW, 1), ValueError,
                                  'channels C=6 must be divisible by 4 (2-D RoPE rotates C/4 channel pairs '
                                  'by the row and C/4 by the column)'),
        'qk not a tensor': ((qk.numpy(), v, HW, NH), TypeError, 'qk must be a tensor, got ndarray'),
    }


BAD = _bad_inputs()


@pytest.mark.parametrize('entry', list(ENTRY_POINTS))
@pytest.mark.parametrize('case', list(BAD))
def test_each_bad_input_gets_its_sentence_from_every_entry_point(case, entry):
    args, error, message = BAD[case]
    with pytest.raises(error, match=f'^{re.escape(message)}$'):
        ENTRY_POINTS[entry](*args)


def test_good_inputs_pass_and_give_the_sizes():
    qk, v = _inputs()
    assert check_attention_inputs(qk, v, HW, NH) == (B, 16, C, C // NH)
    assert check_attention_inputs(qk.bfloat16(), v, HW, NH) == (B, 16, C, C // NH)   # mixed dtypes
    assert check_attention_inputs(qk[:0], v[:0], HW, NH) == (0, 16, C, C // NH)       # empty batch
