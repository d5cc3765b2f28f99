"""The facts about the machine that a benchmark report states next to its numbers."""
from __future__ import annotations

import os
import platform
import subprocess

import torch


def machine_info(device: torch.device) -> dict:
    """CPU/GPU model, cores, threads, versions, load average."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, check=False).stdout
        names = [ln.split(':', 1)[1].strip() for ln in out.splitlines() if ln.startswith('Model name')]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = dict(cpu=cpu, cores=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads(),
                python=platform.python_version(), device=str(device),
                load_average=' / '.join(f'{x:.2f}' for x in os.getloadavg()))
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def machine_line(device: torch.device) -> str:
    """One line: :func:`machine_info`'s facts, plus the OpenMP settings that change timings."""
    facts = machine_info(device)
    info = (f"{facts['cpu']}, {facts['cores']} cores, {facts['threads']} threads, "
            f"torch {facts['torch']}, python {facts['python']}")
    for var in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY'):
        if os.environ.get(var):
            info += f', {var}={os.environ[var]}'
    info += f", load average {facts['load_average']}"  # other work on the machine skews timings
    if 'gpu' in facts:
        info += f", {facts['gpu']}"
    return info
