"""How large a chunk the PyTorch implementations process at a time: the one rule.

Several ops walk their input in chunks of rows (the attention, the Downsample's expansion, the MLP's
GELU and ``fc2``), so that a temporary as wide as the op's widest activation never exists whole. On
CPU a chunk's largest temporary holds about 2^20 elements per intra-op thread (4 MB of float32 per
core; this machine's L2 holds 2 MB per core). Smaller chunks pay more per-op overhead (each op forks
and joins the intra-op threads): MILA-T's training step at 512² on 2 threads ran 1–6% faster with
2^20 than with 2^18 in six in-process A/B runs (docs/benchmark_models.md), for 2% more peak memory.
Much larger ones raise the peak memory, and past 32 MiB every fresh tensor is a new ``mmap`` of
glibc's whose pages fault in one by one. On other devices one chunk holds everything: the cost there
is in kernel launches.
"""
from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 20


def chunk_elements(device: torch.device) -> int | None:
    """Elements of a chunk's largest temporary on ``device``; None: no chunking (one chunk)."""
    if device.type != 'cpu':
        return None
    return CHUNK_ELEMENTS * torch.get_num_threads()


def rows_per_chunk(rows: int, elements_per_row: int, device: torch.device) -> int:
    """Rows per chunk (at least 1, at most ``rows``) when each row of the largest temporary holds
    ``elements_per_row`` elements."""
    elements = chunk_elements(device)
    if elements is None:
        return max(rows, 1)
    return max(1, min(rows, round(elements / max(elements_per_row, 1))))
