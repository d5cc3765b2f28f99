"""Code of the measuring tools (``tools/benchmark*.py``, ``tools/get_flops.py``, ``tools/gpu_check.py``)
and the measures their tests and the op's tests share; each measure has one home here.

Nothing here is imported by ``import mmmila``; each tool imports the submodules it uses:

- :mod:`mmmila.bench.errors`: relative errors (``rel_err``, ``max_rel_err``, ``rel_rms``) and the
  errors of parameter gradients.
- :mod:`mmmila.bench.memory`: the peak memory of one call, here or in a fresh process.
- :mod:`mmmila.bench.timing`: interleaved rounds of calls, the median time of one call.
- :mod:`mmmila.bench.steps`: the measured calls (a model's forward, forward+backward or training
  step; the attention op's output and input gradients).
- :mod:`mmmila.bench.command`: the command line a report records.
- :mod:`mmmila.bench.machine`: the machine facts a benchmark report states.
- :mod:`mmmila.bench.models`: the one set of comparison backbones, and a config's model in tensor mode.
- :mod:`mmmila.bench.model_speed`, :mod:`~mmmila.bench.attention_speed`,
  :mod:`~mmmila.bench.deploy_speed`: what ``tools/benchmark.py``, ``tools/benchmark_attention.py``
  and ``tools/benchmark_deploy.py`` measure and report.
- :mod:`mmmila.bench.gpu_kit`: the GPU validation kit behind ``tools/gpu_check.py``.
- :mod:`mmmila.bench.authors_attention`: the authors' attention chain written out as plain ops (the
  baseline that mmmila's attention op is measured and checked against);
  :mod:`mmmila.bench.float64_attention`: the attention's float64 truth.
- :mod:`mmmila.bench.attention_calls`: which attention implementation ran.
- :mod:`mmmila.bench.traffic`: bytes moved by the ATen ops of a call; :mod:`mmmila.bench.flops`:
  FLOP counting.
"""
