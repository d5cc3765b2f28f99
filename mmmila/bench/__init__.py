"""Code shared by the measuring tools (``tools/benchmark.py``, ``tools/benchmark_attention.py``,
``tools/get_flops.py``) and their tests.

Nothing here is imported by ``import mmmila``; each tool imports the submodules it uses:

- :mod:`mmmila.bench.machine`: the machine facts a benchmark report states.
- :mod:`mmmila.bench.models`: the backbones compared in benchmarks, and a config's model in tensor mode.
- :mod:`mmmila.bench.authors_attention`: the authors' attention chain written out as plain ops (the
  baseline that mmmila's attention op is measured and checked against).
- :mod:`mmmila.bench.traffic`: bytes moved by the ATen ops of a call.
"""
