"""Memory-lean PyTorch implementation of MILA's linear attention (the default CPU path).

Same maths as :func:`mmmila.ops.reference.mila_linear_attention_ref` and the same contract as the
Triton kernels (docs/kernel_math.md): :func:`attention_forward` returns the output and the per-head
S (d x d) and m (d), which the registered op (:mod:`mmmila.ops.library`) saves with its inputs
``qk`` and ``v``; :func:`attention_backward` recomputes the feature map, RoPE and z. Tokens
are processed in chunks, so temporaries stay chunk-sized (cache-resident, no page faults of
N x C buffers) and peak memory is O(N C) for the outputs only.

Per chunk the passes are those of the kernels: forward (1) S, m sums, (2) o = z (q_r S); backward
(A) dS, dm sums and dL/da (needs only S and m), (B) dL/dc and dL/dv.

``compiled``: float32 and float64 CPU inputs run the same passes in mmmila's compiled CPU kernels
(``torch.ops.mmmila_cpu.linear_attention`` and its backward, :mod:`.cpu_kernels`): per chunk one
elementwise pass makes what each matrix product reads (feature map, RoPE, normaliser, in registers),
and a second one in the backward turns the products' results into dL/dqk. Other dtypes (16-bit,
mixed) run the PyTorch ops below.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from . import cpu_kernels
from .capture import capturing_graph
from .chunks import rows_per_chunk
from .reference import EPS
from .rope2d import rope2d_tables

_LOG2E = 1.4426950408889634


def _chunk_rows(batch: int, hw: tuple[int, int], channels: int, device: torch.device) -> int:
    """Rows of the map per chunk (:mod:`.chunks`; two (B, chunk, C) temporaries in the forward, four in
    the backward): whole rows, so that RoPE needs only small tables."""
    return rows_per_chunk(hw[0], batch * channels * hw[1], device)


@lru_cache(maxsize=32)
def _rotation_tables(height: int, width: int, channels: int, device: torch.device,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(i angle) by row, (H, C/4), for the first C/4 pairs and by column, (W, C/4), for the rest.

    The 2-D RoPE angle of a pair depends on the row *or* the column only, so these two small
    tables (built by the reference's own function, bit for bit its angles) replace an (N, C/2) one.
    """
    quarter = channels // 4
    cos_r, sin_r = rope2d_tables(height, 1, channels, device)   # column 0
    cos_c, sin_c = rope2d_tables(1, width, channels, device)    # row 0
    rows = torch.complex(cos_r[:, :quarter].to(dtype), sin_r[:, :quarter].to(dtype))
    cols = torch.complex(cos_c[:, quarter:].to(dtype), sin_c[:, quarter:].to(dtype))
    return rows, cols


def sums_dtype(qk_dtype: torch.dtype, v_dtype: torch.dtype) -> torch.dtype:
    """Dtype of the computation and of S and m: float32, or float64 for float64 inputs."""
    return torch.promote_types(torch.promote_types(qk_dtype, v_dtype), torch.float32)


def _tables(hw: tuple[int, int], channels: int, device: torch.device, dtype: torch.dtype):
    # While a graph is captured a cached tensor made for another call must not enter it (under
    # torch.jit.trace the tracer fails); capture is rare and these tables are tiny: rebuild.
    build = _rotation_tables.__wrapped__ if capturing_graph() else _rotation_tables
    return build(hw[0], hw[1], channels, device, dtype)


@lru_cache(maxsize=32)
def _pair_tables(height: int, width: int, channels: int, device: torch.device,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation tables of the compiled kernels, from :func:`_rotation_tables`: (H, 2, C/2) by row
    for channels [0, C/2) and (W, 2, C/2) by column for [C/2, C). Row 0 holds the cosine of each
    channel's pair angle, row 1 its sine signed -, + for the pair's first and second channel, so that
    the rotation of x is ``x cos + swap(x) sin`` (``swap`` exchanging the channels of each pair)."""
    def per_channel(t: torch.Tensor) -> torch.Tensor:
        sin = torch.stack((-t.imag, t.imag), dim=-1).flatten(-2)
        return torch.stack((t.real.repeat_interleave(2, dim=-1), sin), dim=1).contiguous()

    rows, cols = _tables((height, width), channels, device, dtype)
    return per_channel(rows), per_channel(cols)


def _compiled_tables(hw: tuple[int, int], channels: int, device: torch.device, dtype: torch.dtype):
    """:func:`_pair_tables` for this call, cached but while a graph is captured (as :func:`_tables`)."""
    build = _pair_tables.__wrapped__ if capturing_graph() else _pair_tables
    return build(hw[0], hw[1], channels, device, dtype)


def _compiled_takes(*tensors: torch.Tensor) -> bool:
    """True when the compiled attention kernels take these tensors: CPU, all float32 or all float64."""
    return cpu_kernels.runs(tensors[0]) and all(t.dtype == tensors[0].dtype for t in tensors)


def _inverse(tables: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The tables of the inverse rotation R^T: their conjugates (tiny; made once per backward)."""
    return tuple(t.conj().resolve_conj() for t in tables)


def _rotate(tables: tuple[torch.Tensor, torch.Tensor], row0: int, x: torch.Tensor) -> torch.Tensor:
    """RoPE, in place, of x (B, r * W, C): the tokens of whole rows [row0, row0 + r) of the map."""
    rows, cols = tables
    num_rows = x.shape[1] // cols.shape[0]
    xc = torch.view_as_complex(x.view(x.shape[0], num_rows, cols.shape[0], -1, 2))
    quarter = cols.shape[-1]
    xc[..., :quarter].mul_(rows[row0:row0 + num_rows, None, :])   # (r, 1, C/4)
    xc[..., quarter:].mul_(cols)                                  # (W, C/4)
    return x


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(n, C) tokens of one image -> (nh, n, d), a view."""
    return x.unflatten(-1, (num_heads, -1)).transpose(0, 1)


def _phi(x: torch.Tensor, phi: torch.Tensor, dphi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """elu(x) + 1 and its derivative exp(min(x, 0)), written into the buffers ``phi`` and ``dphi``.

    phi(x) = max(x + 1, exp(min(x, 0))), as exp(x) >= 1 + x: four passes, one exp and no boolean
    masks (both slow on CPU); exp(x) for x <= 0 is also more accurate than expm1(x) + 1.
    """
    if x.dtype != phi.dtype:          # 16-bit inputs: compute in the buffers' float32
        x = phi.copy_(x)
    if dphi.dtype == torch.float32:   # exp2 is 2x faster than exp on CPU; error ~1e-7 relative
        torch.mul(x, _LOG2E, out=dphi).clamp_(max=0.0).exp2_()
    else:
        torch.clamp(x, max=0.0, out=dphi).exp_()
    torch.add(x, 1.0, out=phi)
    torch.maximum(phi, dphi, out=phi)
    return phi, dphi


def _normaliser(q: torch.Tensor, m: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """z = 1 / (q . m + eps): q (B, n, C), m (B, nh, d) -> ``out`` (B, n, nh) viewed (B, n, nh, 1)."""
    torch.linalg.vecdot(q.unflatten(-1, (m.shape[1], -1)), m.unsqueeze(1), out=out)
    return out.add_(EPS).reciprocal_().unsqueeze(-1)


class _Workspace:
    """Chunk-sized buffers allocated once per call and reused by every chunk.

    Fresh allocations per chunk cost page faults and allocator work on CPU (much of a chunk's
    elementwise time on a virtual machine); a view of the first ``n`` tokens serves the last chunk.
    """

    def __init__(self, batch: int, tokens: int, channels: int, num_heads: int, dtype, device) -> None:
        self.shape = (batch, tokens, channels)
        self.kw = dict(dtype=dtype, device=device)
        self.z = torch.empty((batch, tokens, num_heads), **self.kw)
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, n: int) -> torch.Tensor:
        if name not in self.buffers:
            self.buffers[name] = torch.empty(self.shape, **self.kw)
        return self.buffers[name][:, :n]


def _per_head(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, n, C) -> (B, n, nh, d), a view."""
    return x.unflatten(-1, (num_heads, -1))


def _apply(x: torch.Tensor, mat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out_h = x_h mat_h per image and head: x, out (B, n, C), mat (B, nh, d, d)."""
    nh = mat.shape[1]
    for b in range(x.shape[0]):
        torch.bmm(_heads(x[b], nh), mat[b], out=_heads(out[b], nh))
    return out


def _in_dtype(x: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """x itself if it has the buffer's (compute) dtype, else a copy of x in the buffer."""
    return x if x.dtype == buffer.dtype else buffer.copy_(x)


def _chunks(hw: tuple[int, int], rows: int):
    """(first row, first token, last token + 1) of each chunk of whole rows."""
    for r in range(0, hw[0], rows):
        yield r, r * hw[1], min(r + rows, hw[0]) * hw[1]


def attention_forward(qk: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_heads: int,
                      compiled: bool = False):
    """(out, S, m) of MILA's attention, chunked; inputs are checked by the caller.

    Args:
        qk (Tensor): (B, N, 2C).
        v (Tensor): (B, N, C).
        hw (tuple[int, int]): (H, W), H * W = N.
        num_heads (int): nh.
        compiled (bool): by mmmila's compiled CPU kernels when they take the inputs (CPU tensors,
            float32 or float64 throughout).

    Returns:
        tuple[Tensor, Tensor, Tensor]: out (B, N, C) in v's dtype; S = k_r^T v / N (B, nh, d, d)
        and m = mean(k) (B, nh, d) in the compute dtype (float32, float64 for float64 inputs).
        An empty batch or map gives an empty output and zero S and m.
    """
    B, N, C = (int(n) for n in v.shape)
    cdt = sums_dtype(qk.dtype, v.dtype)
    d = C // num_heads
    s = qk.new_zeros((B, num_heads, d, d), dtype=cdt)
    if B == 0 or N == 0:
        return torch.empty((B, N, C), dtype=v.dtype, device=v.device), s, s.new_zeros((B, num_heads, d))
    rows = _chunk_rows(B, hw, C, qk.device)
    if compiled and _compiled_takes(qk, v):
        return torch.ops.mmmila_cpu.linear_attention(qk.contiguous(), v.contiguous(),
                                                     *_compiled_tables(hw, C, qk.device, cdt), num_heads, rows)
    tables = _tables(hw, C, qk.device, cdt)
    ws = _Workspace(B, rows * hw[1], C, num_heads, cdt, qk.device)
    k_sum = qk.new_zeros((B, C), dtype=cdt)
    for r, i, j in _chunks(hw, rows):               # pass 1: S and sum(k)
        n = j - i
        k = _phi(qk[:, i:j, C:], ws.get('a', n), ws.get('b', n))[0]
        k_sum += k.sum(dim=1)
        _rotate(tables, r, k)
        vc = _in_dtype(v[:, i:j], ws.get('b', n))
        for b in range(B):
            s[b].baddbmm_(_heads(k[b], num_heads).transpose(1, 2), _heads(vc[b], num_heads))
    s /= N
    m = (k_sum / N).view(B, num_heads, d)           # a float32 sum times 1/N, never a 16-bit sum
    out = torch.empty((B, N, C), dtype=v.dtype, device=v.device)
    for r, i, j in _chunks(hw, rows):               # pass 2: o = z (q_r S)
        n = j - i
        q = _phi(qk[:, i:j, :C], ws.get('a', n), ws.get('b', n))[0]
        z = _normaliser(q, m, ws.z[:, :n])
        _rotate(tables, r, q)
        o = out[:, i:j] if out.dtype == cdt else ws.get('b', n)
        _per_head(_apply(q, s, o), num_heads).mul_(z)
        if o.dtype != out.dtype:
            out[:, i:j] = o
    return out, s, m


def attention_backward(grad: torch.Tensor, grad_s: torch.Tensor | None, grad_m: torch.Tensor | None,
                       qk: torch.Tensor, v: torch.Tensor, s: torch.Tensor, m: torch.Tensor,
                       hw: tuple[int, int], num_heads: int,
                       compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dqk and dL/dv from dL/dout (``grad``) and, when S and m are used too, dL/dS and dL/dm.

    ``s`` and ``m`` are those of :func:`attention_forward`; everything else is recomputed.
    ``compiled`` as for :func:`attention_forward`.
    """
    B, N, C = (int(n) for n in v.shape)
    cdt = s.dtype
    if compiled and _compiled_takes(qk, v, grad, s) and B and N:
        return torch.ops.mmmila_cpu.linear_attention_backward(
            grad.contiguous(), grad_s, grad_m, qk.contiguous(), v.contiguous(), s, m.contiguous(),
            *_compiled_tables(hw, C, qk.device, cdt), num_heads, _chunk_rows(B, hw, C, qk.device))
    dqk = torch.empty(qk.shape, dtype=qk.dtype, device=qk.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    if B == 0 or N == 0:
        return dqk, dv
    tables = _tables(hw, C, qk.device, cdt)
    inverse = _inverse(tables)
    rows = _chunk_rows(B, hw, C, qk.device)
    ws = _Workspace(B, rows * hw[1], C, num_heads, cdt, qk.device)
    ds = torch.zeros_like(s)
    dm = torch.zeros_like(m)
    s_t = s.transpose(-1, -2)
    for r, i, j in _chunks(hw, rows):               # pass A: dS, dm and dL/da
        n = j - i
        q, dphi = _phi(qk[:, i:j, :C], ws.get('q', n), ws.get('dphi', n))
        z = _normaliser(q, m, ws.z[:, :n])                        # (B, n, nh, 1)
        gz = ws.get('gz', n)
        torch.mul(_per_head(grad[:, i:j], num_heads), z, out=_per_head(gz, num_heads))   # z g
        dq = _apply(gz, s_t, ws.get('dq', n))                          # dL/dq_r = z g S^T
        _rotate(inverse, r, dq)                                        # R^T dL/dq_r
        # dz z^2 = (g . q_r S) z^2 = (q_r . dL/dq_r) z = (q . R^T dL/dq_r) z  (R is orthogonal):
        # the un-rotated q serves, so q can be rotated in place afterwards.
        w = torch.linalg.vecdot(_per_head(q, num_heads), _per_head(dq, num_heads)).unsqueeze(-1)
        w.mul_(z)
        for b in range(B):
            dm[b].unsqueeze(1).baddbmm_(w[b].permute(1, 2, 0), _heads(q[b], num_heads), alpha=-1.0)
        _rotate(tables, r, q)                                          # q_r
        for b in range(B):
            ds[b].baddbmm_(_heads(q[b], num_heads).transpose(1, 2), _heads(gz[b], num_heads))
        _per_head(dq, num_heads).addcmul_(w, m.unsqueeze(1), value=-1.0)
        torch.mul(dq, dphi, out=dqk[:, i:j, :C])
    if grad_s is not None:                          # S and m are outputs too: their own gradients
        ds += grad_s
    if grad_m is not None:
        dm += grad_m
    ds /= N
    dm /= N
    ds_t = ds.transpose(-1, -2)
    for r, i, j in _chunks(hw, rows):               # pass B: dL/dc and dL/dv
        n = j - i
        k, dphi = _phi(qk[:, i:j, C:], ws.get('q', n), ws.get('dphi', n))
        _rotate(tables, r, k)
        dv_c = dv[:, i:j] if dv.dtype == cdt else ws.get('gz', n)
        _apply(k, ds, dv_c)                                           # k_r dS / N
        if dv_c.dtype != dv.dtype:
            dv[:, i:j] = dv_c
        vc = _in_dtype(v[:, i:j], ws.get('gz', n))
        dk = _apply(vc, ds_t, ws.get('dq', n))                        # dL/dk_r = v dS^T / N
        _per_head(_rotate(inverse, r, dk), num_heads).add_(dm.unsqueeze(1))
        torch.mul(dk, dphi, out=dqk[:, i:j, C:])
    return dqk, dv
