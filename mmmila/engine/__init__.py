"""mmmila's mmengine hooks and the file writing they rely on (docs/checkpoints.md).

- :mod:`mmmila.engine.files`: writing a file atomically (temporary name in the same folder,
  fsync, rename), and the mmengine file backend that writes local files that way;
- :mod:`mmmila.engine.hooks`: ``AtomicCheckpointHook``, ``RankZeroLoggerHook`` and
  ``FiniteLossHook``, registered in mmengine's ``HOOKS`` by ``import mmmila``.
"""
