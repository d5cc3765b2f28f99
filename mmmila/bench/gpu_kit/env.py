"""The GPU kit's ``env`` section: the machine, the versions, what was staged, the copy bandwidth."""
from __future__ import annotations

import platform

import torch

from mmmila.bench.gpu_kit.common import median_ms
from mmmila.bench.machine import machine_line


def section_env(ctx) -> dict:
    """GPU, torch, triton, CUDA, the carried wheels that were staged, and the measured device-to-device
    copy bandwidth (bytes read + written per second; ``ctx['copy_gb_s']`` for the op's speed)."""
    device = ctx['device']
    info = dict(machine=machine_line(device), python=platform.python_version(), platform=platform.platform(),
                torch=torch.__version__, cuda=torch.version.cuda, staging=ctx['staging'])
    try:
        import triton
        info['triton'] = triton.__version__
    except ImportError as err:
        info['triton'] = f'not importable: {err}'
    from mmmila.kernels import is_interpreted
    info['triton_interpreter'] = is_interpreted()
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, sm_count=props.multi_processor_count,
                    capability='%d.%d' % (props.major, props.minor),
                    memory_gib=round(props.total_memory / 2**30, 1))
    else:
        info['device_name'] = f'CPU ({platform.processor() or platform.machine()}), dry run'
    info.update(copy_bandwidth(ctx))
    ctx['copy_gb_s'] = info['copy_gb_s']
    return dict(status='ok', **info)


def copy_bandwidth(ctx) -> dict:
    """The device-to-device copy bandwidth: ``dst.copy_(src)`` of a 1 GiB buffer (4 MiB on CPU),
    read + written bytes per second. Returns ``copy_bytes``, ``copy_ms`` and ``copy_gb_s``."""
    device = ctx['device']
    nbytes = (1 << 30) if device.type == 'cuda' else (1 << 22)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = median_ms(ctx, lambda: dst.copy_(src))
    return dict(copy_bytes=nbytes, copy_ms=ms, copy_gb_s=2 * nbytes / (ms * 1e-3) / 1e9)   # read + write
