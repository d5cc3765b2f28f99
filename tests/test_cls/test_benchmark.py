"""tools/benchmark.py and its code (``mmmila.bench.model_speed``, ``timing``, ``memory``, ``models``):
statistics, call counting, peak memory, the comparison models and the report.

No timing is asserted: only what the code computes from the times it measured. The command line
runs as a subprocess, as a user runs it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
import torch

from mmmila.bench import model_speed as benchmark
from mmmila.bench import models as bench_models
from mmmila.bench.machine import machine_info
from mmmila.bench.memory import peak_memory
from mmmila.bench.timing import time_interleaved

from ..conftest import REPO, TINY_ARCH

TOOL = REPO / 'tools' / 'benchmark.py'


def test_summarise_reports_median_quartiles_throughput_and_per_pixel_cost():
    r = benchmark.summarise('m', 1000, 'forward', 2, [0.4, 0.1, 0.2, 0.3, 0.5], peak_bytes=3 * 2**20,
                            cpu_times=[0.2, 0.1, 0.3, 0.2, 0.9])
    assert r.median_ms == pytest.approx(300) and r.repeats == 5
    assert r.cpu_ms == pytest.approx(200) and r.cpu_ms_per_megapixel == pytest.approx(100)
    assert (r.q1_ms, r.q3_ms) == (pytest.approx(200), pytest.approx(400))
    assert r.images_per_s == pytest.approx(2 / 0.3)
    assert r.ms_per_megapixel == pytest.approx(300 / 2.0)  # 2 images of 1 megapixel
    assert r.peak_mem_mb == pytest.approx(3.0)
    with pytest.raises(ValueError, match='no timed calls'):
        benchmark.summarise('m', 8, 'forward', 1, [], None)


def test_peak_memory_is_the_peak_of_live_tensors():
    mb = 2**20

    def two_temporaries():
        a = torch.ones(64 * mb // 4)      # 64 MB
        b = torch.ones(32 * mb // 4)      # +32 MB: peak 96 MB
        del a
        c = b * 2                         # 32 + 32 MB
        return c.sum()

    peak = peak_memory(two_temporaries, torch.device('cpu')).above_start
    assert 96 * mb <= peak <= 96 * mb + 64 * 1024  # plus a few scalars
    kept = torch.ones(16 * mb // 4)  # memory live before the call is not counted
    small = peak_memory(lambda: torch.ones(1000).sum(), torch.device('cpu'))
    assert small.above_start < 64 * 1024 and small.total is None   # CPU: no device-wide figure
    # backward's buffers count too: 4 MB of grads plus the saved activations
    lin = torch.nn.Linear(1024, 1024)
    x = torch.randn(2048, 1024)  # 8 MB
    peak = peak_memory(lambda: lin(x).relu().sum().backward(), torch.device('cpu')).above_start
    assert peak >= 8 * mb + 4 * mb
    del kept


@pytest.mark.parametrize('name', ['swin-t', 'convnext-t'])
def test_comparison_backbones_return_four_maps_at_any_size(name):
    model = bench_models.build_backbone(name)
    model.eval()  # (mmpretrain's SwinTransformer.train() returns None)
    with torch.inference_mode():
        outs = model(torch.rand(1, 3, 160, 96))  # 5 x 3 at stride 32: below Swin's 7 x 7 window
    assert [o.shape[1] for o in outs] == [96, 192, 384, 768]
    assert [tuple(o.shape[2:]) for o in outs] == [(40, 24), (20, 12), (10, 6), (5, 3)]


def test_benchmark_and_report(tmp_path):
    from mmmila.models import MILA

    def factory(size):
        return MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)

    lines = []
    results = benchmark.benchmark('tiny', factory, [64, 96, 128], list(benchmark.MODES), 1,
                                  torch.device('cpu'),
                                  warmup=1, repeats=2, min_time=0.0, max_repeats=2, log=lines.append,
                                  backward_sizes=[64, 96])
    assert [(r.size, r.mode) for r in results] == [(64, 'forward'), (64, 'forward+backward'), (96, 'forward'),
                                                   (96, 'forward+backward'), (128, 'forward')]
    assert all(r.repeats == 2 and r.median_ms > 0 and r.cpu_ms > 0 for r in results) and len(lines) == 5
    assert all(r.peak_mem_mb > 0 for r in results)
    fwd = {r.size: r.peak_mem_mb for r in results if r.mode == 'forward'}
    assert fwd[64] < fwd[96] < fwd[128]  # more pixels, more activation memory

    before = machine_info(torch.device('cpu'))
    from datetime import datetime, timezone
    md = tmp_path / 'report.md'
    benchmark.write_report(results, tmp_path / 'bench', md, before, before, datetime.now(timezone.utc),
                           'python tools/benchmark.py tiny --sizes 64 96', metric='cpu')
    csv = (tmp_path / 'bench.csv').read_text().splitlines()
    assert csv[0].startswith('model,size,mode,batch,median_ms') and len(csv) == 6
    assert csv[1].split(',')[:3] == ['tiny', '64', 'forward']
    text = md.read_text()
    assert f'torch {torch.__version__}' in text and '--sizes 64 96' in text
    assert '| 64² |' in text and '| 128² |' in text and '**forward+backward**' in text
    assert '**forward**: cpu ms per megapixel' in text
    assert (tmp_path / 'bench.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_a_config_model_is_measured_in_tensor_mode(tmp_path):
    from .conftest import tiny_config
    factory = bench_models.build_from_config(str(tiny_config(tmp_path)), batch=2)
    assert factory(64)(torch.rand(2, 3, 64, 64)).shape == (2, 10)  # the classifier's logits
    results = benchmark.benchmark('cfg', factory, [64], ['forward'], 2, torch.device('cpu'), warmup=1,
                                  repeats=1, min_time=0.0, max_repeats=1, log=lambda _: None)
    assert len(results) == 1 and results[0].images_per_s > 0 and results[0].batch == 2


def test_cli_rejects_unknown_models():
    res = subprocess.run([sys.executable, str(TOOL), 'mila-t', 'resnet-50'], capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    assert res.returncode == 2 and "unknown model(s) ['resnet-50']" in res.stderr
    with pytest.raises(ValueError, match='unknown model'):
        bench_models.build_backbone('vit-b')


def test_cli_measures_a_config_and_writes_the_report(tmp_path):
    from .conftest import tiny_config
    prefix = tmp_path / 'run'
    subprocess.run([sys.executable, str(TOOL), '--config', str(tiny_config(tmp_path)), '--sizes', '64',
                    '--modes', 'forward', '--repeats', '1', '--min-time', '0', '--max-repeats', '1',
                    '--threads', '1', '--out', str(prefix)], check=True, capture_output=True, text=True,
                   cwd=REPO, timeout=600)
    csv = (tmp_path / 'run.csv').read_text().splitlines()
    assert len(csv) == 2 and csv[1].split(',')[1:4] == ['64', 'forward', '1']
    # the command as typed at the repository's root; the folders of this machine are not in it
    assert f'python tools/benchmark.py --config .../{tiny_config(tmp_path).name} --sizes 64' in (
        tmp_path / 'run.md').read_text()
    assert str(tmp_path) not in (tmp_path / 'run.md').read_text()


def test_time_interleaved_runs_every_model_once_per_round_in_shuffled_orders():
    calls = []
    steps = {k: (lambda k=k: calls.append(k)) for k in 'abc'}
    times = time_interleaved(steps, torch.device('cpu'), repeats=6, min_time=0.0, max_repeats=6)
    assert all(len(w) == len(c) == 6 for w, c in times.values())
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 6 and all(sorted(r) == ['a', 'b', 'c'] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1   # shuffled (seeded): not one fixed order
    times = time_interleaved(steps, torch.device('cpu'), repeats=1, min_time=1e6, max_repeats=4)
    assert all(len(w) == 4 for w, _ in times.values())   # min_time unreachable: the cap stops it
    with pytest.raises(ValueError, match='repeats'):
        time_interleaved(steps, torch.device('cpu'), repeats=4, min_time=0, max_repeats=3)


def test_benchmark_models_side_by_side_with_memory_from_a_callable(tmp_path):
    from mmmila.models import MILA

    built = []

    def factory(size):
        built.append(size)
        return MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)

    asked = []

    def memory(name, size, mode):
        asked.append((name, size, mode))
        return {'a': 2, 'b': 4}[name] * 2**20

    results = benchmark.benchmark_models([('a', factory), ('b', factory)], [64, 96], list(benchmark.MODES), 1,
                                         torch.device('cpu'), warmup=1, repeats=2, min_time=0.0,
                                         max_repeats=2, log=lambda _: None, backward_sizes=[64],
                                         memory=memory)
    assert built == [64, 64, 96, 96]   # both models of a size exist together
    assert [(r.model, r.size, r.mode) for r in results] == [
        ('a', 64, 'forward'), ('b', 64, 'forward'), ('a', 64, 'forward+backward'),
        ('b', 64, 'forward+backward'), ('a', 96, 'forward'), ('b', 96, 'forward')]
    assert asked == [(r.model, r.size, r.mode) for r in results]
    assert [r.peak_mem_mb for r in results[:2]] == [2.0, 4.0]
    a, b = (r for r in results[:2])
    assert a.speedup is None and b.speedup is not None and b.speedup_q1 <= b.speedup <= b.speedup_q3
    text = benchmark.markdown_tables(results, 'wall')   # wall time: the round-by-round ratio
    assert '**forward**: a relative to the others (wall time, round by round: median (IQR)' in text
    assert f'| 64² | {b.speedup:.2f}x ({b.speedup_q1:.2f}–{b.speedup_q3:.2f}) | 0.50x |' in text
    text = benchmark.markdown_tables(results, 'cpu')    # CPU time: the ratio of the medians
    assert f'| 64² | {b.cpu_ms / a.cpu_ms:.2f}x | 0.50x |' in text


def test_paired_speedup_is_the_ratio_within_each_round():
    # the machine's speed changes from round to round (x1, x3, x1.5, x2): each model's own times
    # spread widely, the ratio within a round does not
    first = [1.0, 3.0, 1.5, 2.0]
    other = [1.1, 3.3, 1.65, 2.4]   # 1.1x, 1.1x, 1.1x, 1.2x
    med, q1, q3 = benchmark.paired_speedup(first, other)
    assert med == pytest.approx(1.1) and q1 == pytest.approx(1.1) and q3 == pytest.approx(1.125)
    assert benchmark.paired_speedup([2.0], [1.0]) == (0.5, 0.5, 0.5)   # the first is slower: below 1
    with pytest.raises(ValueError, match='same number of rounds'):
        benchmark.paired_speedup([1.0, 2.0], [1.0])


def test_cli_compiled_engine_beside_eager(tmp_path):
    """--engine both: each backbone eager and under torch.compile in the same rounds, a first-call
    table (the compilation) and one ratio table per engine; compiled models get no memory figure."""
    prefix = tmp_path / 'run'
    res = subprocess.run([sys.executable, str(TOOL), 'mila-t', 'swin-t', '--sizes', '64', '--modes', 'forward',
                          '--repeats', '2', '--min-time', '0', '--max-repeats', '2', '--threads', '1',
                          '--engine', 'both', '--compile-backend', 'eager', '--memory', 'none',
                          '--out', str(prefix)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line.split(',') for line in (tmp_path / 'run.csv').read_text().splitlines()]
    col = {name: i for i, name in enumerate(rows[0])}
    models = [r[col['model']] for r in rows[1:]]
    assert models == ['mila-t', 'mila-t (compiled)', 'swin-t', 'swin-t (compiled)']
    assert all(float(r[col['first_call_s']]) > 0 and float(r[col['median_ms']]) > 0 for r in rows[1:])
    # round-by-round ratios against the first model of the same engine
    assert [r[col['speedup']] != '' for r in rows[1:]] == [False, False, True, True]
    text = (tmp_path / 'run.md').read_text()
    assert '**forward**: first call, s (for a compiled model: its compilation)' in text
    assert '**forward**: MILA-T relative to the others' in text
    assert '**forward**: MILA-T (compiled) relative to the others' in text
    assert '| speed vs Swin-T (mmpretrain) (compiled) |' in text
    assert '--engine both' in text


def test_peak_memory_in_a_fresh_process():
    peak = benchmark.peak_memory_in_subprocess('mila-t', 64, 'forward', 1, torch.device('cpu'), 1)
    assert peak is not None and 64 * 16 * 16 * 4 < peak < 64 * 2**20   # a stage-0 map .. 64 MB


@pytest.mark.slow
def test_peak_memory_in_a_fresh_process_reports_a_failed_child():
    with pytest.raises(RuntimeError, match='failed'):
        benchmark.peak_memory_in_subprocess('resnet-50', 64, 'forward', 1, torch.device('cpu'), 1)


def test_dispatch_cost_counts_a_forward_and_times_the_layer_with_the_ops_stubbed():
    from collections import Counter

    from mmmila.bench import dispatch_cost
    from mmmila.models import MILA

    model = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    calls = dispatch_cost.op_calls_per_forward(model, 64)
    blocks = sum(TINY_ARCH['depths'])
    # per block: cpe1, dwc, LePE (with the gate) and cpe2; two norm chains; the MLP's GELU + fc2;
    # the attention; one expansion per Downsample
    assert calls == Counter(dwconv=4 * blocks, norm_linears=2 * blocks, gelu_linear=blocks, attention=blocks,
                            expand_dwconv=len(TINY_ARCH['depths']) - 1)
    costs = dispatch_cost.entry_point_costs('auto', number=20, repeat=1)
    assert set(costs) == set(dispatch_cost.ENTRY_POINTS) and all(c > 0 for c in costs.values())
    assert dispatch_cost.per_forward_ms(costs, calls) == pytest.approx(
        sum(costs[k] * n for k, n in calls.items()) / 1e3)
    table = dispatch_cost.dispatch_table('tiny', calls, {'auto': costs})
    assert f'| dwconv | {4 * blocks} | {costs["dwconv"]:.1f} |' in table
    # the stubs are gone again: the real op runs and computes
    x = torch.randn(1, 4, 2)
    out = torch.ops.mmmila.dwconv_tokens(x, torch.zeros(2, 1, 3, 3), torch.ones(2), 2, 2, None, None, False,
                                         'none')
    assert torch.equal(out, torch.ones_like(x))


def test_cli_dispatch_cost():
    res = subprocess.run([sys.executable, str(TOOL), 'mila-t', '--dispatch-cost', '--threads', '1'],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    # MILA-T: 18 blocks of 8 calls and 3 Downsamples; the Triton path where the interpreter is on
    # (the test session's environment, which the tool inherits)
    assert '| **per forward** | 147 |' in res.stdout and 'µs per call (auto)' in res.stdout
    interpreted = os.environ.get('TRITON_INTERPRET') == '1'
    assert ('µs per call (triton)' in res.stdout) == interpreted
    assert ('Triton path not measured' in res.stdout) != interpreted
    res = subprocess.run([sys.executable, str(TOOL), 'swin-t', '--dispatch-cost'], capture_output=True,
                         text=True, cwd=REPO, timeout=600)
    assert res.returncode == 2 and '--dispatch-cost measures named MILA backbones' in res.stderr


def test_cpu_kernel_gain_records_a_forward_and_times_both_paths():
    from mmmila.bench import cpu_kernel_gain as gain
    from mmmila.models import MILA

    model = MILA(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    calls = gain.op_calls(model, 64)
    # per block cpe1 and cpe2 (skip), dwc (silu) and LePE (residual and gate), and the attention, on
    # each stage's map; a Downsample (8x expansion) after each stage but the last
    C, depths, heads = TINY_ARCH['embed_dims'], TINY_ARCH['depths'], TINY_ARCH['num_heads']
    expected = {}
    for i, d in enumerate(depths):
        side, ch = 64 // 4 // 2 ** i, C * 2 ** i
        for use, n in ((dict(residual=False, gate=False, skip=True, act='none'), 2),
                       (dict(residual=False, gate=False, skip=False, act='silu'), 1),
                       (dict(residual=True, gate=True, skip=False, act='none'), 1)):
            expected[gain.DwconvCall(1, side, side, ch, **use)] = n * d
        expected[gain.AttentionCall(1, side, side, ch, heads[i])] = d
        expected[gain.GeluLinearCall(1, side * side, 4 * ch, ch)] = d
        if i < len(depths) - 1:
            expected[gain.DownsampleCall(1, side, side, ch, 8 * ch)] = 1
    assert dict(calls) == expected
    call = gain.DwconvCall(1, 4, 4, 64, True, True, False, 'none')
    assert call.use == 'residual+gate'
    down = gain.DownsampleCall(1, 4, 4, 8, 64)
    others = (gain.AttentionCall(1, 4, 4, 16, 2), gain.GeluLinearCall(1, 16, 32, 8))
    timings = {c: gain.time_call(c, rounds=2, number=1) for c in (call, down, *others)}
    for t in timings.values():
        assert set(t) == {'pytorch', 'compiled'} and all(v > 0 for v in t.values())
    table = gain.step_table('tiny', 64, Counter({call: 3, down: 1}), timings)
    t, u = timings[call], timings[down]
    row = f'| dwconv_tokens (1, 4×4, 64), residual+gate | 3 | {t["pytorch"]:.0f} | {t["compiled"]:.0f} |'
    assert row in table
    assert f'| expand_dwconv (1, 4×4, 8 → 64) | 1 | {u["pytorch"]:.0f} | {u["compiled"]:.0f} |' in table
    total = {k: (3 * t[k] + u[k]) / 1e3 for k in t}
    assert f'**{total["pytorch"]:.1f} ms** | **{total["compiled"]:.1f} ms**' in table


def test_cli_cpu_kernels():
    res = subprocess.run([sys.executable, str(TOOL), 'mila-t', '--cpu-kernels', '--sizes', '64', '--threads',
                          '1', '--max-repeats', '1'], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    # MILA-T: 18 blocks of 4 depthwise-conv calls, an attention and an MLP; 3 Downsamples
    assert '| **per training step** | 111 |' in res.stdout and 'PyTorch / compiled' in res.stdout
    res = subprocess.run([sys.executable, str(TOOL), 'swin-t', '--cpu-kernels'], capture_output=True,
                         text=True, cwd=REPO, timeout=600)
    assert res.returncode == 2 and '--cpu-kernels measures named MILA backbones' in res.stderr
    env = dict(os.environ, MMMILA_CPU_KERNELS='0')
    res = subprocess.run([sys.executable, str(TOOL), 'mila-t', '--cpu-kernels', '--sizes', '64'], env=env,
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 1 and 'MMMILA_CPU_KERNELS=0 in the environment' in res.stderr
