"""mmmila's compiled CPU kernels (``mmmila._C``, :mod:`mmmila.ops.cpu_kernels`): built in the project's
environment, taken by the ops on CPU for float32 and float64 only, the same maths as the PyTorch
implementations (against float64), deterministic whatever the thread count, and switched off by
``MMMILA_CPU_KERNELS=0``."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mmmila.ops import cpu_kernels, dwconv_tokens, expand_dwconv
from mmmila.ops.dwconv import dwconv_backward, dwconv_forward
from tests.conftest import REPO, seed_for

USES = {
    'cpe': dict(skip=True),
    'dwc': dict(act='silu'),
    'lepe+gate': dict(residual=True, gate=True),
    'all': dict(act='silu', skip=True, residual=True, gate=True),
    'gate+skip': dict(skip=True, gate=True),
}
# (B, H, W, C): MILA-like maps, channels past the last 16-lane vector (21, 40), one row, one column
SHAPES = [(1, 16, 12, 64), (2, 5, 7, 21), (1, 1, 9, 40), (3, 6, 1, 16), (1, 1, 1, 8)]


def _draw(B, H, W, C, use, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed_for(seed))

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    opts = USES[use]
    t = dict(x=rand(B, H * W, C), weight=rand(C, 1, 3, 3) * 0.3, bias=rand(C) * 0.1,
             residual=rand(B, H * W, C) if opts.get('residual') else None,
             gate=rand(B, H * W, C) if opts.get('gate') else None, grad=rand(B, H * W, C))
    cast = {k: None if v is None else v.to(dtype) for k, v in t.items()}
    return cast, dict(skip=opts.get('skip', False), act=opts.get('act', 'none'))


def _compiled(t, flags, hw):
    silu = flags['act'] == 'silu'
    out = torch.ops.mmmila_cpu.dwconv_tokens(t['x'], t['weight'], t['bias'], *hw, t['residual'], t['gate'],
                                             flags['skip'], silu)
    grads = torch.ops.mmmila_cpu.dwconv_tokens_backward(t['grad'], t['x'], t['weight'], t['bias'], *hw,
                                                        t['residual'], t['gate'], flags['skip'], silu)
    return (out, *grads)


def _pytorch(t, flags, hw):
    args = (t['x'], t['weight'], t['bias'], hw, t['residual'], t['gate'], flags['skip'], flags['act'])
    return (dwconv_forward(*args), *dwconv_backward(t['grad'], *args))


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _assert_as_close_as_pytorch(names, exact, ours64, ours32, theirs32):
    """The kernels against float64 (``exact``, PyTorch's ops in float64): float64 kernels equal it to
    rounding; float32 kernels are no further from it than PyTorch's ops in float32 on the same draw
    (``theirs32``), up to 4x (summation orders differ). Empty outputs (a gradient a use has not) pass."""
    for name, e, o64, o32, t32 in zip(names, exact, ours64, ours32, theirs32):
        assert o64.shape == e.shape and o32.shape == e.shape, name
        assert o64.dtype == torch.float64 and o32.dtype == torch.float32, name
        if e.numel() == 0:
            continue
        assert _rel(o64, e) <= 1e-13, name
        assert _rel(o32, e) <= 4 * _rel(t32, e) + 1e-7, name


def test_built_in_the_project_environment():
    """`make install` builds mmmila._C; without it the ops fall back, and these tests would be moot."""
    assert cpu_kernels.AVAILABLE, cpu_kernels.REASON


NAMES = ('out', 'dx', 'dweight', 'dbias', 'dresidual', 'dgate')


@pytest.mark.parametrize('use', list(USES))
@pytest.mark.parametrize('B,H,W,C', SHAPES)
def test_dwconv_matches_float64(use, B, H, W, C):
    """Output and the five gradients: float64 kernels equal the PyTorch implementation in float64 to
    rounding; float32 kernels are no further from float64 than the PyTorch implementation in float32
    on the same draw (up to 4x: the summation orders differ)."""
    hw = (H, W)
    t64, flags = _draw(B, H, W, C, use, seed=11, dtype=torch.float64)
    t32 = {k: None if v is None else v.float() for k, v in t64.items()}
    exact = _pytorch(t64, flags, hw)
    _assert_as_close_as_pytorch(NAMES, exact, _compiled(t64, flags, hw), _compiled(t32, flags, hw),
                                _pytorch(t32, flags, hw))


def test_same_result_whatever_the_thread_count():
    """Rows are shared among threads; the weight's gradient is summed per map row, then over rows in
    one order: 1 and 3 threads give the same bits."""
    t, flags = _draw(2, 24, 20, 48, 'all', seed=12)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _compiled(t, flags, (24, 20))
        torch.set_num_threads(3)
        three = _compiled(t, flags, (24, 20))
    finally:
        torch.set_num_threads(before)
    for name, a, b in zip(NAMES, one, three):
        assert torch.equal(a, b), name


def _ops_called(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events() if e.name.startswith('mmmila_cpu::')}


@pytest.mark.parametrize('dtype,compiled', [(torch.float32, True), (torch.float64, True),
                                            (torch.bfloat16, False)])
def test_the_op_takes_them_on_cpu_for_float32_and_float64(dtype, compiled):
    """torch.ops.mmmila.dwconv_tokens on CPU: forward and backward through the compiled kernels for
    float32 and float64, through the PyTorch implementation for other dtypes (same results)."""
    t, flags = _draw(1, 4, 6, 16, 'all', seed=13, dtype=dtype)
    leaves = {k: t[k].clone().requires_grad_() for k in ('x', 'weight', 'bias', 'residual', 'gate')}

    def step():
        out = dwconv_tokens(leaves['x'], leaves['weight'], leaves['bias'], (4, 6), leaves['residual'],
                            leaves['gate'], **flags)
        out.backward(t['grad'])
        return out

    seen = _ops_called(step)
    expected = {'mmmila_cpu::dwconv_tokens', 'mmmila_cpu::dwconv_tokens_backward'}
    assert seen == (expected if compiled else set())


def test_non_contiguous_inputs():
    """The op hands the kernels contiguous tokens: a strided view gives what its copy gives."""
    t, flags = _draw(1, 5, 6, 32, 'lepe+gate', seed=14)
    wide = torch.cat([t['x'], t['gate']], dim=-1)        # x and gate as column slices of one tensor
    x, gate = wide[..., :32], wide[..., 32:]
    assert not x.is_contiguous()
    got = dwconv_tokens(x, t['weight'], t['bias'], (5, 6), t['residual'], gate, **flags)
    ref = dwconv_tokens(x.contiguous(), t['weight'], t['bias'], (5, 6), t['residual'], gate.contiguous(),
                        **flags)
    assert torch.equal(got, ref)


def test_empty_batch():
    t, flags = _draw(0, 3, 3, 8, 'all', seed=15)
    out, dx, dw, db, dres, dgate = _compiled(t, flags, (3, 3))
    assert out.shape == dx.shape == dres.shape == dgate.shape == (0, 9, 8)
    assert dw.shape == (8, 1, 3, 3) and not dw.any() and not db.any()


@pytest.mark.parametrize('change,message', [
    (dict(x=torch.zeros(1, 9, 8, dtype=torch.bfloat16)), 'float32 or float64 only'),
    (dict(x=torch.zeros(1, 9, 16)[..., :8]), 'x must be contiguous CPU tokens'),
    (dict(height=2), 'does not match N = 9'),
    (dict(weight=torch.zeros(8, 1, 5, 5)), 'weight (C, 1, 3, 3) and bias (C,) expected for C = 8'),
])
def test_kernel_checks_name_the_problem(change, message):
    kw = dict(x=torch.zeros(1, 9, 8), weight=torch.zeros(8, 1, 3, 3), bias=torch.zeros(8), height=3, width=3,
              residual=None, gate=None, skip=False, silu=False) | change
    with pytest.raises(RuntimeError) as err:
        torch.ops.mmmila_cpu.dwconv_tokens(*kw.values())
    assert message in str(err.value)


def test_environment_variable_switches_them_off():
    """MMMILA_CPU_KERNELS=0 when mmmila is imported: the PyTorch implementations run, with the reason."""
    code = ('import torch\n'
            'from mmmila.ops import cpu_kernels, dwconv_tokens\n'
            'x = torch.randn(1, 12, 8)\n'
            'with torch.profiler.profile() as p:\n'
            '    dwconv_tokens(x, torch.randn(8, 1, 3, 3), torch.randn(8), (3, 4), skip=True)\n'
            'seen = any(e.name.startswith("mmmila_cpu") for e in p.events())\n'
            'print("RESULT", cpu_kernels.AVAILABLE, seen)\n'
            'print("REASON", cpu_kernels.REASON)\n')
    env = dict(os.environ, MMMILA_CPU_KERNELS='0')
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    # only our lines: a stack's packages may print their own notices on import
    assert [line for line in out if line.startswith(('RESULT', 'REASON'))] == [
        'RESULT False False', 'REASON MMMILA_CPU_KERNELS=0 in the environment']


# ---- the Downsample's stride-2 depthwise convolution between two ReLUs ----------------------------------
def _s2_reference(a, weight, bias, pad_top):
    """relu(dwconv3x3 stride 2 (relu(a)) + bias) on a channels-last chunk (B, rows, W, C), padding
    pad_top rows above and below and one column each side, by F.conv2d."""
    e = F.relu(a).permute(0, 3, 1, 2)
    p = F.conv2d(e, weight, bias, stride=2, padding=(int(pad_top), 1), groups=weight.shape[0])
    return F.relu(p).permute(0, 2, 3, 1)


# (B, rows, W, C, pad_top): a first chunk (padded on top) and later ones, odd row counts, channels past
# the last vector, one output column
S2_SHAPES = [(1, 8, 8, 32, True), (2, 7, 6, 20, False), (1, 9, 4, 17, False), (1, 2, 2, 8, True),
             (3, 3, 10, 40, False)]


@pytest.mark.parametrize('B,R,W,C,pad_top', S2_SHAPES)
def test_dwconv_s2_relu_matches_float64(B, R, W, C, pad_top):
    """Output, dL/da, the taps' and the bias's gradients against F.conv2d's autograd: float64 to
    rounding; float32 no further from float64 than F.conv2d in float32 on the same draw (up to 4x)."""
    g = torch.Generator().manual_seed(seed_for(21))
    a64, w64, b64 = (torch.randn(*s, generator=g, dtype=torch.float64)
                     for s in ((B, R, W, C), (C, 1, 3, 3), (C,)))
    out_shape = _s2_reference(a64, w64, b64, pad_top).shape
    grad64 = torch.randn(*out_shape, generator=g, dtype=torch.float64)

    def reference(a, w, b, grad):
        leaves = [t.clone().requires_grad_() for t in (a, w, b)]
        out = _s2_reference(*leaves, pad_top)
        return (out.detach(), *torch.autograd.grad(out, leaves, grad))

    def compiled(a, w, b, grad):
        out = torch.ops.mmmila_cpu.dwconv_s2_relu(a, w, b, pad_top)
        da = a.clone()   # the backward writes dL/da over a
        return (out, da, *torch.ops.mmmila_cpu.dwconv_s2_relu_backward_(grad, da, w, b, pad_top))

    f32 = [t.float() for t in (a64, w64, b64, grad64)]
    _assert_as_close_as_pytorch(('out', 'da', 'dweight', 'dbias'), reference(a64, w64, b64, grad64),
                                compiled(a64, w64, b64, grad64), compiled(*f32), reference(*f32))


@pytest.mark.parametrize('dtype,compiled', [(torch.float32, True), (torch.float64, True),
                                            (torch.bfloat16, False)])
def test_the_downsample_op_takes_them_on_cpu(dtype, compiled):
    """torch.ops.mmmila.expand_dwconv on CPU: its chunks through the compiled kernel for float32 and
    float64, forward and backward."""
    g = torch.Generator().manual_seed(seed_for(22))
    x, ew, eb, dw, db = (torch.randn(*s, generator=g).to(dtype).requires_grad_()
                         for s in ((1, 36, 8), (32, 8), (32,), (32, 1, 3, 3), (32,)))

    def step():
        expand_dwconv(x, ew, eb, dw, db, (6, 6)).float().sum().backward()

    expected = {'mmmila_cpu::dwconv_s2_relu', 'mmmila_cpu::dwconv_s2_relu_backward_'}
    assert _ops_called(step) == (expected if compiled else set())


@pytest.mark.parametrize('change,message', [
    (dict(a=torch.zeros(1, 4, 5, 8)), "the map's width must be even, got 5"),
    (dict(a=torch.zeros(1, 4, 6, 8, dtype=torch.float16)), 'float32 or float64 only'),
    (dict(bias=torch.zeros(7)), 'weight (C, 1, 3, 3) and bias (C,) expected for C = 8'),
])
def test_s2_kernel_checks_name_the_problem(change, message):
    kw = dict(a=torch.zeros(1, 4, 6, 8), weight=torch.zeros(8, 1, 3, 3), bias=torch.zeros(8),
              pad_top=True) | change
    with pytest.raises(RuntimeError) as err:
        torch.ops.mmmila_cpu.dwconv_s2_relu(*kw.values())
    assert message in str(err.value)


# ---- MILA's linear attention ---------------------------------------------------------------------------
# (B, (H, W), nh, d): MILA's head width over odd maps, heads that split a vector (d = 20) and halves of C
# past the last vector (C / 2 = 20, 6), one head, one row
ATTN_SHAPES = [(2, (7, 11), 2, 32), (1, (5, 7), 1, 32), (2, (9, 9), 2, 20), (2, (3, 13), 3, 4), (1, (1, 12), 4, 8)]


def _attention_paths(qk, v, g, gs, gm, hw, nh, compiled):
    """(out, S, m, dqk, dv) of the chunked attention, compiled or by PyTorch ops."""
    from mmmila.ops.cpu_fused import attention_backward, attention_forward

    out, s, m = attention_forward(qk, v, hw, nh, compiled=compiled)
    return (out, s, m, *attention_backward(g, gs, gm, qk, v, s, m, hw, nh, compiled=compiled))


@pytest.mark.parametrize('rows', [2, 100])
@pytest.mark.parametrize('B,hw,nh,d', ATTN_SHAPES)
def test_attention_matches_float64(B, hw, nh, d, rows, monkeypatch):
    """Out, S, m and the gradients of qk and v (with gradients flowing into S and m too), by chunks of
    2 rows (a ragged last one) and in one chunk: float64 kernels equal the PyTorch ops in float64 to
    rounding; float32 ones are no further from float64 than the PyTorch ops in float32 on the same
    draw (up to 4x)."""
    from mmmila.ops import cpu_fused

    monkeypatch.setattr(cpu_fused, '_chunk_rows', lambda b, hw_, c, dev: rows)
    g = torch.Generator().manual_seed(seed_for(40 + hw[0] * nh + d))
    C, N = nh * d, hw[0] * hw[1]
    draw = [torch.randn(*shape, generator=g, dtype=torch.float64) for shape in
            ((B, N, 2 * C), (B, N, C), (B, N, C), (B, nh, d, d), (B, nh, d))]
    draw[0] *= 1.5   # both branches of elu + 1
    f32 = [t.float() for t in draw]
    _assert_as_close_as_pytorch(('out', 'S', 'm', 'dqk', 'dv'), _attention_paths(*draw, hw, nh, compiled=False),
                                _attention_paths(*draw, hw, nh, compiled=True),
                                _attention_paths(*f32, hw, nh, compiled=True),
                                _attention_paths(*f32, hw, nh, compiled=False))


@pytest.mark.parametrize('dtype,compiled', [(torch.float32, True), (torch.float64, True),
                                            (torch.bfloat16, False)])
def test_the_attention_op_takes_them_on_cpu(dtype, compiled):
    """torch.ops.mmmila.linear_attention on CPU: forward and backward are one compiled kernel each for
    float32 and float64; other dtypes run the PyTorch ops."""
    from mmmila.ops import mila_linear_attention

    g = torch.Generator().manual_seed(seed_for(32))
    qk = torch.randn(1, 24, 32, generator=g).to(dtype).requires_grad_()
    v = torch.randn(1, 24, 16, generator=g).to(dtype).requires_grad_()
    seen = _ops_called(lambda: mila_linear_attention(qk, v, (4, 6), 2, backend='torch').sum().backward())
    expected = {'mmmila_cpu::linear_attention', 'mmmila_cpu::linear_attention_backward'}
    assert seen == (expected if compiled else set())


def test_attention_kernels_on_empty_inputs():
    """An empty batch or map: empty out, dqk and dv, zero S and m."""
    for B, hw in ((0, (3, 4)), (2, (0, 4))):
        N = hw[0] * hw[1]
        qk, v = torch.randn(B, N, 32), torch.randn(B, N, 16)
        tables = torch.zeros(hw[0], 2, 8), torch.zeros(hw[1], 2, 8)
        out, s, m = torch.ops.mmmila_cpu.linear_attention(qk, v, *tables, 2, 4)
        assert out.shape == v.shape and not s.any() and not m.any()
        assert s.shape == (B, 2, 8, 8) and m.shape == (B, 2, 8)
        dqk, dv = torch.ops.mmmila_cpu.linear_attention_backward(v, None, None, qk, v, s, m, *tables, 2, 4)
        assert dqk.shape == qk.shape and dv.shape == v.shape


@pytest.mark.parametrize('change,message', [
    (dict(v=torch.zeros(1, 12, 16, dtype=torch.float64)), 'must both be float32 or both float64'),
    (dict(qk=torch.zeros(1, 12, 64)[..., :32]), 'must be contiguous CPU tensors'),
    (dict(qk=torch.zeros(1, 12, 30)), 'qk must be (B, N, 2C) = (1, 12, 32)'),
    (dict(num_heads=3), 'must be a multiple of 4 and of num_heads = 3'),
    (dict(row_table=torch.zeros(4, 2, 8)), 'does not match N = 12'),
    (dict(col_table=torch.zeros(4, 2, 6)), 'the rotation tables must be contiguous (H, 2, C/2)'),
    (dict(chunk_rows=0), 'chunk_rows must be positive'),
])
def test_attention_kernel_checks_name_the_problem(change, message):
    kw = dict(qk=torch.zeros(1, 12, 32), v=torch.zeros(1, 12, 16), row_table=torch.zeros(3, 2, 8),
              col_table=torch.zeros(4, 2, 8), num_heads=2, chunk_rows=2) | change
    with pytest.raises(RuntimeError) as err:
        torch.ops.mmmila_cpu.linear_attention(*kw.values())
    assert message in str(err.value)


# ---- GELU and its gradient in the backward of GELU + fc2 ------------------------------------------------
def test_gelu_grad_matches_float64():
    """a = gelu(h) and dh = da gelu'(h) (in place of da), exact GELU: float64 equal to PyTorch's float64
    ops to rounding; float32 no further from float64 than PyTorch's float32 ops (up to 4x), large |h|
    and ragged rows included."""
    g = torch.Generator().manual_seed(seed_for(41))
    h = torch.randn(300, 37, generator=g, dtype=torch.float64) * 3
    h[0, :5] = torch.tensor([0.0, 5.0, -5.0, 40.0, -40.0], dtype=torch.float64)
    da = torch.randn(300, 37, generator=g, dtype=torch.float64)
    exact = (F.gelu(h), torch.ops.aten.gelu_backward(da, h))
    for dtype in (torch.float64, torch.float32):
        hh, dd = h.to(dtype), da.to(dtype)
        ours = (torch.empty_like(hh), dd.clone())
        torch.ops.mmmila_cpu.gelu_grad_(hh, *ours)
        theirs = (F.gelu(hh), torch.ops.aten.gelu_backward(dd, hh))
        for name, o, t, e in zip(('a', 'dh'), ours, theirs, exact):
            if dtype == torch.float64:
                torch.testing.assert_close(o, e, rtol=1e-13, atol=1e-15, msg=name)
            else:
                assert _rel(o, e) <= 4 * _rel(t, e) + 1e-7, name


def test_gelu_linear_backward_both_ways_across_chunks(monkeypatch):
    """The backward of GELU + fc2 by chunks of 7 rows: the compiled kernel and the PyTorch ops give the
    same float64 gradients, and the op on CPU takes the kernel once per chunk."""
    from mmmila.ops import chunks, gelu_linear
    from mmmila.ops.linear_chains import gelu_linear_backward

    monkeypatch.setattr(chunks, 'CHUNK_ELEMENTS', 7 * 6 / torch.get_num_threads())
    g = torch.Generator().manual_seed(seed_for(42))
    h, grad = torch.randn(2, 17, 6, generator=g, dtype=torch.float64), torch.randn(2, 17, 4, generator=g,
                                                                                   dtype=torch.float64)
    lin = torch.nn.Linear(6, 4).double()
    args = (grad, h, lin.weight.detach(), lin.bias.detach())
    for name, a, b in zip(('dh', 'dweight', 'dbias'), gelu_linear_backward(*args, compiled=True),
                          gelu_linear_backward(*args, compiled=False)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=name)
    leaf = h.clone().requires_grad_()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        gelu_linear(leaf, lin).backward(grad)
    assert sum(e.name == 'mmmila_cpu::gelu_grad_' for e in prof.events()) == 5   # 34 rows in chunks of 7
