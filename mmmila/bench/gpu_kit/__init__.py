"""The GPU validation kit behind ``tools/gpu_check.py``: one module per concern.

- :mod:`~mmmila.bench.gpu_kit.plan`: the sections, their limits, sizes and time needs.
- :mod:`~mmmila.bench.gpu_kit.staging`: a checkout's mmmila and the carried wheels made importable
  without pip (standard library only; the command line loads it by its path before mmmila imports).
- :mod:`~mmmila.bench.gpu_kit.report`: ``gpu_check.json`` / ``gpu_check.md`` and the summary table.
- :mod:`~mmmila.bench.gpu_kit.common`: the sections' context, the model under test, the backend switch.
- :mod:`~mmmila.bench.gpu_kit.env`, :mod:`~mmmila.bench.gpu_kit.correctness`,
  :mod:`~mmmila.bench.gpu_kit.speed`: the sections.
- :mod:`~mmmila.bench.gpu_kit.run`: the sections in order, within the budget.

The measures themselves (errors, peak memory, timing, the measured calls, the comparison models)
are the ones every benchmark uses: :mod:`mmmila.bench.errors`, :mod:`~mmmila.bench.memory`,
:mod:`~mmmila.bench.timing`, :mod:`~mmmila.bench.steps`, :mod:`~mmmila.bench.models`. Nothing here
imports mmcv, mmdet, mmseg, mmpretrain or OpenCV: the GPU image has none of them.
"""
