# ImageNet-1K at 224 with the MILA authors' augmentation (their timm `create_transform` arguments):
#   train: RandomResizedCrop 224 (scale 0.08-1, ratio 3/4-4/3, bicubic), horizontal flip 0.5,
#          RandAugment 'rand-m9-mstd0.5-inc1', RandomErasing 0.25 in 'pixel' mode;
#          colour jitter 0.4 is set in their config but timm applies it only without an
#          auto-augment policy, so it is not used;
#   test:  resize the short side to 256 (bicubic), centre crop 224.
# Mixup / CutMix and label smoothing live in the model config (batch augments and loss).
# Data layout: data/imagenet/{train,val}/<class folder>/*.JPEG (torchvision ImageFolder, as the
# authors read it), or with meta/{train,val}.txt annotation files.
dataset_type = 'ImageNet'
data_root = 'data/imagenet'

data_preprocessor = dict(
    num_classes=1000,
    # timm's IMAGENET_DEFAULT_MEAN / STD (the authors' Normalize), in 0-255 RGB
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,  # images are loaded BGR
)
bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # rand-m9-mstd0.5-inc1: 2 ops per image, magnitude 9 of 10 with std 0.5, 'increasing' op set
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    # re_prob 0.25, re_mode 'pixel' (per-pixel normal noise in normalised space), re_count 1
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
