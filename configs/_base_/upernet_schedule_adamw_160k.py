# The authors' UperNet optimisation: AdamW (lr 6e-5, betas 0.9/0.999, weight decay 0.01), no weight
# decay on parameters whose name contains 'norm' (the backbone's LayerNorms and the BatchNorms of its
# stem and downsampling; the heads' norms are named 'bn' and are decayed, as in the authors' runs);
# no gradient clipping, fp32. 160k iterations with a poly (power 1) decay to 0 over all 160k and a
# linear warm-up from 1e-6x over the first 1500 iterations multiplied on top of it: this is how the
# authors' mmcv 1.x `lr_config(policy='poly', warmup='linear')` behaves. mmengine's LinearLR and
# PolyLR reach their final value after `end - begin - 1` steps, hence the ends 1501 and 160001: with
# them the learning rate equals mmcv's at every iteration (tests/test_seg/test_seg_configs.py).
# Validation and checkpoints every 16k iterations.
_base_ = ['mmseg::_base_/schedules/schedule_160k.py']

max_iters = 160000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500 + 1),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=max_iters + 1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=16000)

# The learning rate above is for 8 GPUs x 2 images; `--cfg-options auto_scale_lr.enable=True`
# rescales it linearly for another total batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# mmseg keeps its default hooks in the schedule: here, with mmmila's hooks that keep a run's files
# whole (docs/checkpoints.md): checkpoints and last_checkpoint written atomically, outdated ones
# removed only after the new one is in place (AtomicCheckpointHook); the test metrics file written by
# rank 0 alone (RankZeroLoggerHook); training stopped at a NaN or infinite loss before a checkpoint of
# it is written (FiniteLossHook; off with --cfg-options default_hooks.check_loss.enabled=False).
default_hooks = dict(
    logger=dict(type='RankZeroLoggerHook'),
    checkpoint=dict(type='AtomicCheckpointHook'),
    check_loss=dict(type='FiniteLossHook', enabled=True))
