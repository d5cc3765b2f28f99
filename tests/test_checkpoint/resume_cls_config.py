# A tiny MILA classifier on a folder of small images, for the tools/train.sh --resume test.
# The test sets train_dataloader.dataset.data_root with --cfg-options. The tools run mmengine's
# LoggerHook / CheckpointHook named here as mmmila's subclasses (mmmila.utils.run_setup.use_file_safe_hooks).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmmila', 'tests.test_checkpoint.train_hooks'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=2, mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True),
    backbone=dict(type='MILA', arch=dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
                  out_indices=(3,), drop_path_rate=0.0),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=256, loss=dict(type='CrossEntropyLoss')))

train_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(type='CustomDataset', data_root='data/toy_cls', data_prefix='', with_label=True,
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]),
    sampler=dict(type='DefaultSampler', shuffle=False))
train_cfg = dict(by_epoch=False, max_iters=6)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    check_loss=dict(type='FiniteLossHook'))
custom_hooks = [dict(type='MMMILATestNote'), dict(type='MMMILATestKillAfter')]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_level = 'INFO'
