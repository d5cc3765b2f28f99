"""Launch parameters of the MILA linear-attention kernels: block sizes, warps, chunking, precision.

:func:`launch_config` turns a problem (N tokens, B * nh heads, head dim, dtype, device) and a set of
:class:`BlockParams` into the :class:`LaunchConfig` of one call, grids included. It is a pure
function; the op caches its result per problem in eager mode (:func:`mmmila.kernels.tuning.config_for`),
so a call computes nothing on the host that an earlier call of the same shape computed already.

The default :class:`BlockParams` are reasoned from the bytes each pass moves and from the
compiler's register reports (docs/kernels.md, "Launch parameters"), not from timings: no GPU has
timed them yet. :data:`TUNING_SPACE` is the finite set of values the autotuner
(:mod:`.tuning`, on CUDA with ``MMMILA_AUTOTUNE=1``) may pick from, so that the interpreter
tests can run every configuration a GPU can get.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# MILA's heads all have 32 channels. The kernels are written for any power-of-two D >= 32, but at
# D = 64 and 128 ptxas reports register spills (docs/kernels.md), so only 32 is enabled.
SUPPORTED_HEAD_DIMS = (32,)


@dataclass(frozen=True)
class BlockParams:
    """What tuning may vary; the rest of a :class:`LaunchConfig` follows from these and the problem.

    Attributes:
        block_n (int): tokens per tile of the map passes (a program handles one tile).
        map_warps (int): warps per map program.
        reduce_block_n (int): tokens per tile of the reduction passes (a program loops over tiles).
        reduce_warps (int): warps per reduction program.
        num_stages (int): software-pipelining stages of the reduction loops.
        max_chunks (int): the most reduction programs per (batch, head). Their partial sums
            (4.2 KB each at d = 32) are added in two levels by the last programs to finish
            (:data:`CHUNK_GROUP` per group, then the groups): a tail of up to
            ``CHUNK_GROUP + max_chunks / CHUNK_GROUP`` records read by one program.
    """

    block_n: int
    map_warps: int
    reduce_block_n: int
    reduce_warps: int
    num_stages: int
    max_chunks: int


@dataclass(frozen=True)
class LaunchConfig:
    """Everything the launchers need for one call: block sizes, warps, chunking, precision, grids.

    Attributes:
        block_n (int): tokens per tile of the map passes (BLOCK_N).
        reduce_block_n (int): tokens per tile of the reduction passes.
        num_chunks (int): programs per (batch, head) in the reduction passes.
        chunk_tokens (int): tokens per reduction program, a multiple of ``reduce_block_n``.
        map_warps (int): warps per map program (ignored by the interpreter).
        reduce_warps (int): warps per reduction program (ignored by the interpreter).
        num_stages (int): pipelining stages of the reduction loops (ignored by the interpreter).
        dot_precision (str): ``input_precision`` of ``tl.dot`` on float32 tiles.
        map_grid (tuple[int, int]): (cdiv(N, block_n), B * nh).
        reduce_grid (tuple[int, int]): (num_chunks, B * nh).
        records (int): partial-sum records per (batch, head): one per chunk, one per group of
            :data:`CHUNK_GROUP` chunks.
        counters (int): int32 counters the reduction counts in: one per group and one per
            (batch, head), for all B * nh.
    """

    block_n: int
    reduce_block_n: int
    num_chunks: int
    chunk_tokens: int
    map_warps: int
    reduce_warps: int
    num_stages: int
    dot_precision: str
    map_grid: tuple[int, int]
    reduce_grid: tuple[int, int]
    records: int
    counters: int


# Reasoned defaults per pass and input dtype (docs/kernels.md, "Launch parameters": bytes in flight
# per SM from the ptxas register reports; no GPU has timed them yet).
_FWD_16 = BlockParams(block_n=64, map_warps=4, reduce_block_n=32, reduce_warps=4, num_stages=3, max_chunks=256)
_BWD_16 = BlockParams(block_n=64, map_warps=4, reduce_block_n=32, reduce_warps=4, num_stages=3, max_chunks=256)
_FWD_32 = BlockParams(block_n=64, map_warps=4, reduce_block_n=32, reduce_warps=8, num_stages=3, max_chunks=256)
_BWD_32 = BlockParams(block_n=32, map_warps=4, reduce_block_n=32, reduce_warps=8, num_stages=2, max_chunks=256)
DEFAULT_PARAMS = {
    ('fwd', torch.bfloat16): _FWD_16, ('fwd', torch.float16): _FWD_16, ('fwd', torch.float32): _FWD_32,
    ('bwd', torch.bfloat16): _BWD_16, ('bwd', torch.float16): _BWD_16, ('bwd', torch.float32): _BWD_32,
}
PASSES = ('fwd', 'bwd')
# What the autotuner may choose from, field by field (its search is one field at a time from the
# default; the interpreter tests run every (block_n, reduce_block_n) pair of it).
TUNING_SPACE = {
    'block_n': (32, 64, 128),
    'map_warps': (4, 8),
    'reduce_block_n': (16, 32, 64),
    'reduce_warps': (4, 8),
    'num_stages': (1, 2, 3),
    'max_chunks': (16, 64, 256),
}
# The reduction adds its chunks' partial sums in groups of this many (the last program of a group
# adds the group's, the last group the groups'): kernels/common.py, _finish_head_sums.
CHUNK_GROUP = 8
# The fewest reduction tiles a chunk gets on CUDA (a program's fixed work: loading S and m, storing
# its partial, the count, amortised over at least this many tiles).
MIN_TILES_PER_CHUNK = 8


def default_params(kind: str, dtype: torch.dtype) -> BlockParams:
    """The reasoned defaults of the forward (``kind='fwd'``) or backward (``'bwd'``) kernels for
    inputs of ``dtype`` (qk's)."""
    return DEFAULT_PARAMS[(kind, dtype)]


def all_block_params() -> list[BlockParams]:
    """Every :class:`BlockParams` the defaults and the autotuner can give (the product of
    :data:`TUNING_SPACE` with the defaults): the finite set the tests draw from."""
    fields = list(TUNING_SPACE)
    space = {BlockParams(**dict(zip(fields, values))) for values in itertools.product(*TUNING_SPACE.values())}
    return sorted(space | set(DEFAULT_PARAMS.values()), key=lambda p: tuple(vars(p).values()))


def neighbours(params: BlockParams, field: str) -> list[BlockParams]:
    """``params`` with ``field`` set to each value of :data:`TUNING_SPACE` (the autotuner's step)."""
    return [replace(params, **{field: value}) for value in TUNING_SPACE[field]]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def parallel_slots(device: torch.device, per_sm: int = 4, interpreted: int = 4) -> int:
    """How many programs that share a reduction keep the device busy: ``per_sm`` per SM on CUDA
    (for the attention's reductions four: two to four fit at once, and a second wave evens out the
    chunks' ends); ``interpreted`` on CPU, where the interpreter runs programs one after another and
    a few still exercise the combination of partial sums exactly as on a GPU."""
    if device.type == 'cuda':
        return per_sm * _sm_count(device)
    return interpreted


def launch_config(num_tokens: int, batch_heads: int, head_dim: int, dtype: torch.dtype,
                  device: torch.device, num_chunks: int | None = None, kind: str = 'fwd',
                  params: BlockParams | None = None) -> LaunchConfig:
    """The launch parameters for N tokens and B * nh (batch, head) pairs.

    Chunking: the reduction passes split each (batch, head)'s tokens into ``num_chunks`` runs of
    whole tiles, enough for about four programs per SM over all heads (MILA-T's first stage at
    B = 1 has only 2 heads), at most ``params.max_chunks`` and, on CUDA, at least
    :data:`MIN_TILES_PER_CHUNK` tiles each; the last chunk may be ragged.

    Args:
        num_tokens (int): N.
        batch_heads (int): B * nh.
        head_dim (int): d.
        dtype (torch.dtype): dtype of the inputs (qk's); float32 inputs get IEEE float32 dots.
        device (torch.device): where the tensors live.
        num_chunks (int, optional): force the number of reduction chunks per (batch, head)
            (tests use it to cover 1 and many chunks); clamped to the number of tiles.
        kind (str): 'fwd' or 'bwd', the pass whose defaults apply when ``params`` is not given.
        params (BlockParams, optional): block sizes and warps; default :func:`default_params`.

    Returns:
        LaunchConfig: the parameters and grids.
    """
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f'head dim {head_dim} is not in {SUPPORTED_HEAD_DIMS}')
    params = params or default_params(kind, dtype)
    reduce_block_n = params.reduce_block_n
    n_tiles = _cdiv(num_tokens, reduce_block_n)
    if num_chunks is None:
        num_chunks = min(_cdiv(parallel_slots(device), batch_heads), params.max_chunks)
        if device.type == 'cuda':
            num_chunks = min(num_chunks, _cdiv(n_tiles, MIN_TILES_PER_CHUNK))
    num_chunks = max(1, min(num_chunks, n_tiles))
    chunk_tokens = _cdiv(n_tiles, num_chunks) * reduce_block_n
    num_chunks = _cdiv(num_tokens, chunk_tokens)  # no empty trailing chunk
    # float32 inputs promise float32 accuracy: TF32 dots would cost ~1e-3 relative error.
    # For 16-bit inputs TF32 is more precise than the inputs themselves.
    if dtype == torch.float32 or device.type != 'cuda' or torch.version.hip is not None:
        dot_precision = 'ieee'
    else:
        dot_precision = 'tf32'
    num_groups = _cdiv(num_chunks, CHUNK_GROUP)
    return LaunchConfig(params.block_n, reduce_block_n, num_chunks, chunk_tokens, params.map_warps,
                        params.reduce_warps, params.num_stages, dot_precision,
                        (_cdiv(num_tokens, params.block_n), batch_heads), (num_chunks, batch_heads),
                        num_chunks + num_groups, batch_heads * (num_groups + 1))

