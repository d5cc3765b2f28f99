# mmpretrain's default runtime, with mmmila's hooks that keep a run's files whole (docs/checkpoints.md):
# checkpoints and last_checkpoint written atomically, outdated checkpoints removed only after the new
# one is in place (AtomicCheckpointHook); the test metrics file written by rank 0 alone
# (RankZeroLoggerHook); training stopped at a NaN or infinite loss before a checkpoint of it is
# written (FiniteLossHook; off with --cfg-options default_hooks.check_loss.enabled=False).
_base_ = ['mmpretrain::_base_/default_runtime.py']

default_hooks = dict(
    logger=dict(type='RankZeroLoggerHook'),
    checkpoint=dict(type='AtomicCheckpointHook'),
    check_loss=dict(type='FiniteLossHook', enabled=True))
