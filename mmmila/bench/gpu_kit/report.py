"""The GPU kit's report: ``gpu_check.json`` and ``gpu_check.md``, rewritten after every section, and
the summary table printed last."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from mmmila.bench.gpu_kit.plan import CORRECTNESS_SECTIONS

SECTION_COLUMNS = {
    'op_correctness': ['shape', 'dtype', 'out', 'dqk', 'dv', 'limit', 'nan', 'ok'],
    'backbone_correctness': ['precision', 'outputs', 'output_limit', 'worst_param_grad', 'worst_param',
                             'limit', 'all_grads', 'all_grads_limit', 'torch_path_outputs',
                             'torch_path_worst_param_grad', 'triton_calls', 'torch_calls', 'ok'],
    'op_targets': ['item', 'value', 'unit', 'target', 'met', 'measured_on'],
    'op_speed': ['map', 'dtype', 'mode', 'variant', 'ms', 'speedup_vs_authors', 'gb_s', 'of_copy_bw',
                 'peak_mb'],
    'backbone_speed': ['model', 'size', 'mode', 'ms', 'images_s', 'peak_mb', 'peak_above_start_mb', 'error'],
    'compiled_speed': ['model', 'size', 'mode', 'eager_ms', 'compiled_ms', 'compiled_speedup',
                       'compiled_first_call_s', 'eager_first_call_s', 'error'],
    'profile': ['op', 'ms_per_step', 'share', 'calls_per_step'],
    'sweep': ['model', 'size', 'mode', 'ms', 'images_s', 'peak_mb', 'peak_above_start_mb', 'error'],
}
PROFILE_MODEL_COLUMNS = ['model', 'wall_ms', 'timed_ms', 'driver_launches', 'counted_launches', 'casts',
                         'triton_launches', 'error']
SUMMARY_COLUMNS = ['item', 'value', 'target', 'met']


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec='seconds')


class Report:
    """Collects the sections and writes ``gpu_check.json`` / ``gpu_check.md`` into ``out``.

    Args:
        command (str): the command as a user types it at the repository's root
            (:func:`mmmila.bench.command.command_line`): no path of the machine it ran on.
    """

    def __init__(self, out: Path, command: str, dry_run: bool, budget_s: float, seed: int):
        self.out = out
        self.data = dict(kit='tools/gpu_check.py', command=command, dry_run=dry_run, started=_now(),
                         budget_s=budget_s, seed=seed, sections={})

    def add(self, name: str, section: dict) -> None:
        self.data['sections'][name] = section
        self.write()

    def finish(self, total_s: float) -> None:
        """Add the summary table and the run's total time, and write."""
        self.data['summary'] = summary(self.data)
        self.data['total_s'] = round(total_s, 1)
        self.write()

    def write(self) -> None:
        self.data['updated'] = _now()
        tmp = self.out / 'gpu_check.json.tmp'
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.out / 'gpu_check.json')
        (self.out / 'gpu_check.md').write_text(markdown(self.data))

    def failed(self) -> list[str]:
        return [name for name, s in self.data['sections'].items() if s['status'] in ('fail', 'error')]


def _fmt(x, spec='.3g') -> str:
    if x is None:
        return '-'
    if isinstance(x, float):
        return format(x, spec) if math.isfinite(x) else str(x)
    return str(x)


def md_table(rows: list[dict], columns: list[str]) -> str:
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    lines += ['| ' + ' | '.join(_fmt(r.get(c)) for c in columns) + ' |' for r in rows]
    return '\n'.join(lines)


def markdown(data: dict) -> str:
    env = data['sections'].get('env', {})
    lines = ['# mmmila GPU check' + (' (dry run on CPU)' if data['dry_run'] else ''), '',
             f"Started {data['started']}, last written {data['updated']}; command "
             f"`{data['command']}`; seed {data['seed']}.", '']
    if env:
        lines += [f"Machine: {env.get('device_name')}; torch {env.get('torch')}, triton "
                  f"{env.get('triton')}, CUDA {env.get('cuda')}, Python {env.get('python')}; "
                  f"copy bandwidth {_fmt(env.get('copy_gb_s'))} GB/s. Host: {env.get('machine')}.", '']
    for name, section in data['sections'].items():
        lines += [f'## {name}: {section["status"]}', '']
        if section.get('note'):
            lines += [section['note'], '']
        if section.get('error'):
            lines += ['```', section['error'].strip()[-3000:], '```', '']
        if section.get('models') and name == 'profile':
            lines += [md_table(section['models'], PROFILE_MODEL_COLUMNS), '']
        if section.get('rows') and name in SECTION_COLUMNS:
            lines += [md_table(section['rows'], SECTION_COLUMNS[name]), '']
        if name == 'compile' and section.get('result'):
            lines += ['```', json.dumps(section['result'], indent=1, default=str), '```', '']
    if 'summary' in data:
        lines += ['## Summary', '', md_table(data['summary'], SUMMARY_COLUMNS), '']
    return '\n'.join(lines)


def summary(data: dict) -> list[dict]:
    """The short table printed last: one line per section, then the issue's targets."""
    sections = data['sections']

    def met(name, status):   # only checks that ran can be met or not
        return status == 'ok' if name in CORRECTNESS_SECTIONS and status != 'skipped' else None
    rows = [dict(item=f'section {name}', value=s['status'], target='ok' if name in CORRECTNESS_SECTIONS
                 else '-', met=met(name, s['status'])) for name, s in sections.items()]
    rows += [dict(item=r['item'], value=r['value'], target=r['target'], met=r['met'])
             for r in sections.get('op_targets', {}).get('rows', []) if r['target'] is not None]
    models = {(r['model'], r['mode']): r for r in sections.get('backbone_speed', {}).get('rows', [])
              if 'error' not in r}
    mila, swin = models.get(('MILA-T (Triton)', 'train step')), models.get(('Swin-T (timm)', 'train step'))
    if mila and swin:
        rows.append(dict(item='train step: MILA-T (Triton) / Swin-T time', value=mila['ms'] / swin['ms'],
                         target='<= 1', met=mila['ms'] <= swin['ms']))
        if mila.get('peak_mb') and swin.get('peak_mb'):
            rows.append(dict(item='train step: MILA-T (Triton) / Swin-T peak memory',
                             value=mila['peak_mb'] / swin['peak_mb'], target='< 1',
                             met=mila['peak_mb'] < swin['peak_mb']))
    mila, swin = models.get(('MILA-T (Triton)', 'forward')), models.get(('Swin-T (timm)', 'forward'))
    if mila and swin:
        rows.append(dict(item='forward: MILA-T (Triton) / Swin-T time', value=mila['ms'] / swin['ms'],
                         target='<= 1', met=mila['ms'] <= swin['ms']))
    profiled = {m['model']: m for m in sections.get('profile', {}).get('models', []) if 'error' not in m}
    mila, swin = profiled.get('MILA-T (Triton)'), profiled.get('Swin-T (timm)')
    if mila and swin:
        rows.append(dict(item='launches per train step (counted): MILA-T (Triton) / Swin-T',
                         value=mila['counted_launches'] / swin['counted_launches'], target='<= 1',
                         met=mila['counted_launches'] <= swin['counted_launches']))
    compiled = {(r['model'], r['mode']): r for r in sections.get('compiled_speed', {}).get('rows', [])
                if 'error' not in r}
    mila, swin = compiled.get(('MILA-T (Triton)', 'train step')), compiled.get(('Swin-T (timm)', 'train step'))
    if mila and swin:
        rows.append(dict(item='train step, both compiled: MILA-T (Triton) / Swin-T time',
                         value=mila['compiled_ms'] / swin['compiled_ms'], target='<= 1',
                         met=mila['compiled_ms'] <= swin['compiled_ms']))
    return rows
