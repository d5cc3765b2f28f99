"""The GPU kit's run: the sections in order, each seeded anew and recorded when it ends, within a budget."""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import torch

from mmmila.bench.gpu_kit.correctness import (section_backbone_correctness, section_compile,
                                              section_op_correctness)
from mmmila.bench.gpu_kit.env import section_env
from mmmila.bench.gpu_kit.plan import MIN_SECONDS, PLAN, SECTIONS
from mmmila.bench.gpu_kit.report import SUMMARY_COLUMNS, Report, md_table
from mmmila.bench.gpu_kit.speed import (section_backbone_speed, section_compiled_speed, section_op_speed,
                                        section_op_targets, section_profile, section_sweep)

SECTION_FUNCS = {'env': section_env, 'op_correctness': section_op_correctness,
                 'op_targets': section_op_targets, 'backbone_correctness': section_backbone_correctness,
                 'op_speed': section_op_speed,
                 'backbone_speed': section_backbone_speed, 'compile': section_compile,
                 'compiled_speed': section_compiled_speed, 'profile': section_profile, 'sweep': section_sweep}


def run_sections(report: Report, dry_run: bool, seed: int, only: list[str] | None, fault: str | None,
                 staging: dict, start: float, budget_s: float) -> Report:
    """Run ``env`` and the chosen sections (all when ``only`` is empty), in the order of SECTIONS.

    Each section gets ``torch.manual_seed(seed)`` and a generator seeded with ``seed`` before it
    runs, so it draws its weights and inputs from the seed alone, whichever sections ran before.
    A section that raises is recorded as 'error' and the next one runs; outside the dry run a
    section is skipped when less of the budget (``start`` + ``budget_s``, ``time.monotonic``) is
    left than its MIN_SECONDS. The report is written after every section and at the end.
    """
    ctx = dict(device=torch.device('cpu' if dry_run else 'cuda'), dry=dry_run,
               plan=PLAN['dry' if dry_run else 'gpu'], staging=staging, fault=fault,
               deadline=start + budget_s)
    wanted = ['env'] + [s for s in SECTIONS if s != 'env' and (not only or s in only)]
    for name in wanted:
        left = ctx['deadline'] - time.monotonic()
        if not dry_run and left < MIN_SECONDS[name]:
            report.add(name, dict(status='skipped', note=f'{left:.0f} s of the budget left, the section '
                                  f'needs about {MIN_SECONDS[name]} s'))
            continue
        t0 = time.monotonic()
        torch.manual_seed(seed)
        ctx['gen'] = torch.Generator().manual_seed(seed)
        print(f'gpu_check: [{time.monotonic() - start:6.1f} s] {name} ...', flush=True)
        try:
            section = SECTION_FUNCS[name](ctx)
        except Exception:  # noqa: BLE001  (recorded; the next sections still run)
            section = dict(status='error', error=traceback.format_exc())
        section['seconds'] = round(time.monotonic() - t0, 2)
        report.add(name, section)
        print(f'gpu_check: [{time.monotonic() - start:6.1f} s] {name}: {section["status"]}', flush=True)
        if name == 'env' and section['status'] == 'ok':
            print(f"gpu_check: {section['device_name']}; torch {section['torch']}, "
                  f"triton {section['triton']}, CUDA {section['cuda']}, Python {section['python']}; "
                  f"device copy {section['copy_gb_s']:.1f} GB/s; host {section['machine']}", flush=True)
    report.finish(time.monotonic() - start)
    print(f'\ngpu_check: results in {report.out}/gpu_check.json and gpu_check.md '
          f'({report.data["total_s"]} s)\n')
    print(md_table(report.data['summary'], SUMMARY_COLUMNS))
    return report


class Tee:
    """Write to a stream and to a log file (the kit's ``gpu_check.log``)."""

    def __init__(self, stream, path: Path):
        self.stream, self.file = stream, open(path, 'a', buffering=1)

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)

    def flush(self):
        self.stream.flush()
        self.file.flush()


def log_to(out: Path) -> None:
    """From now on, what the kit prints goes to the terminal and to ``out/gpu_check.log``."""
    sys.stdout = Tee(sys.stdout, out / 'gpu_check.log')
