"""UperNet + a tiny MILA on the toy ADE20K set of ``tools/data/make_toy_ade.py``: a CPU smoke run.

The MILA-T ADE20K config at toy scale: a 4-stage MILA of width 32 (1/1/2/1 blocks) trained from
scratch, narrow heads, 64x64 crops of 96x128 images, batches of 4, 300 iterations at lr 3e-3, no
photometric distortion (the toy classes differ by colour); everything else (dataset, checks,
pipelines, metric, optimiser, TTA) is the real config's. It learns the toy classes in a few minutes
on one CPU core (about 80 mIoU on the toy validation images):

    python tools/data/make_toy_ade.py data/ade_toy/ADEChallengeData2016
    tools/train.sh configs/demo/upernet_mila_t_toy.py 1
"""
_base_ = ['../upernet_mila_t_512x512_160k_ade20k.py']

data_root = 'data/ade_toy/ADEChallengeData2016'
num_classes = 150
crop_size = (64, 64)
scale = (512, 96)  # the toy images' 96-pixel side plays the role of ADE20K's 512
max_iters = 300

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
                  drop_path_rate=0.1, init_cfg=None),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=64),
    auxiliary_head=dict(in_channels=128, channels=32))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedSegAnnotations', num_classes=num_classes),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    # no PhotoMetricDistortion: the toy classes differ by colour alone, which it would blur
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadCheckedSegAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs'),
]
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(scale[0] * r), int(scale[1] * r)), keep_ratio=True)
             for r in img_ratios],
            [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
             dict(type='RandomFlip', prob=1.0, direction='horizontal')],
            [dict(type='LoadCheckedSegAnnotations', num_classes=num_classes)],
            [dict(type='PackSegInputs')],
        ]),
]

train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=3e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30 + 1),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=max_iters + 1),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
# a fixed seed: the toy run gives the same numbers every time
randomness = dict(seed=0)
