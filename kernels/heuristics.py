"""Launch parameters of the MILA linear-attention kernels: block sizes, chunking, precision.

Pure functions of the problem size and the device; nothing is tuned or cached at import time.
The values for CUDA are reasoned defaults (the op is memory-bound, see docs/kernels.md), not
the result of an autotuning run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# MILA's heads all have 32 channels. The kernels are written for any power-of-two D >= 32, but at
# D = 64 and 128 ptxas reports register spills (docs/kernels.md), so only 32 is enabled.
SUPPORTED_HEAD_DIMS = (32,)


@dataclass(frozen=True)
class LaunchConfig:
    """Block sizes and grid of one call.

    Attributes:
        block_n (int): tokens per tile of the map passes (BLOCK_N).
        reduce_block_n (int): tokens per tile of the reduction passes.
        num_chunks (int): programs per (batch, head) in the reduction passes.
        chunk_tokens (int): tokens per reduction program, a multiple of ``reduce_block_n``.
        num_warps (int): warps per program (ignored by the interpreter).
        dot_precision (str): ``input_precision`` of ``tl.dot`` on float32 tiles.
    """

    block_n: int
    reduce_block_n: int
    num_chunks: int
    chunk_tokens: int
    num_warps: int
    dot_precision: str


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _parallel_slots(device: torch.device) -> int:
    """How many programs keep the device busy: a few per SM on CUDA, a handful on CPU."""
    if device.type == 'cuda':
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    # The interpreter runs programs one after another; a few chunks still exercise the
    # partial-sum combination exactly as on a GPU.
    return 4


def launch_config(num_tokens: int, batch_heads: int, head_dim: int, dtype: torch.dtype,
                  device: torch.device, num_chunks: int | None = None) -> LaunchConfig:
    """Choose the launch parameters for N tokens and B * nh (batch, head) pairs.

    The sizes come from ptxas register reports of the compiled kernels (sm_80 and sm_90, d = 32;
    docs/kernels.md), not from timing: the reduction passes keep two (d/2 x d) accumulators and,
    for float32 inputs, reduce over the token axis with FMA dots whose operands live in registers,
    so they take 32-token tiles; the map passes take 64. Eight warps per program avoid spills in
    every kernel at d = 32.

    Args:
        num_tokens (int): N.
        batch_heads (int): B * nh.
        head_dim (int): d.
        dtype (torch.dtype): dtype of the inputs; float32 inputs get IEEE float32 dots.
        device (torch.device): where the tensors live.
        num_chunks (int, optional): force the number of reduction chunks per (batch, head)
            (tests use it to cover 1 and many chunks). Defaults to a device-based choice.

    Returns:
        LaunchConfig: the parameters.
    """
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f'head dim {head_dim} is not in {SUPPORTED_HEAD_DIMS}')
    block_n, reduce_block_n = 64, 32
    n_blocks = _cdiv(num_tokens, reduce_block_n)
    if num_chunks is None:
        # Split N so that all SMs share the reduction even at B * nh = 2 (MILA-T, stage 1).
        num_chunks = _cdiv(_parallel_slots(device), batch_heads)
    num_chunks = max(1, min(num_chunks, n_blocks))
    chunk_tokens = _cdiv(n_blocks, num_chunks) * reduce_block_n
    num_chunks = _cdiv(num_tokens, chunk_tokens)  # no empty trailing chunk
    # float32 inputs promise float32 accuracy: TF32 dots would cost ~1e-3 relative error.
    # For 16-bit inputs TF32 is more precise than the inputs themselves.
    if dtype == torch.float32 or device.type != 'cuda' or torch.version.hip is not None:
        dot_precision = 'ieee'
    else:
        dot_precision = 'tf32'
    return LaunchConfig(block_n, reduce_block_n, num_chunks, chunk_tokens, 8, dot_precision)
