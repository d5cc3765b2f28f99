# ADE20K (SceneParsing, 150 classes) with the authors' augmentation: random rescale of a 2048x512
# scale by 0.5-2.0, a 512x512 crop in which no class covers more than 75%, flip, photometric
# distortion. Single-scale testing resizes to fit 2048x512 (keep ratio); multi-scale testing
# (`tools/test.sh ... --tta`) fits 2048x512 times 0.5, 0.75, ..., 1.75, each with and without flip,
# as the authors' mmseg 0.x `--aug-test` did. The dataset and label loader are mmmila's checked
# versions of mmseg's (`mmmila/datasets/ade20k.py`): a missing data root or label file, and label
# ids outside the 150 classes, stop with a message that names the file. Label id 0 ("other") is
# ignored and 1..150 become 0..149 (reduce_zero_label, fixed by the dataset).
dataset_type = 'ADE20KCheckedDataset'
data_root = 'data/ade/ADEChallengeData2016'
num_classes = 150
crop_size = (512, 512)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCheckedSegAnnotations', num_classes=num_classes),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    # labels are loaded after the resize: predictions are compared at the original size
    dict(type='LoadCheckedSegAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs'),
]
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(2048 * r), int(512 * r)), keep_ratio=True) for r in img_ratios],
            [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
             dict(type='RandomFlip', prob=1.0, direction='horizontal')],
            [dict(type='LoadCheckedSegAnnotations', num_classes=num_classes)],
            [dict(type='PackSegInputs')],
        ]),
]

# 2 images per GPU; the recipe runs 8 GPUs, a total batch of 16 (see auto_scale_lr).
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
# For the benchmark's test images (release_test/testing, no labels) with `--format-only`, set
# data_root, data_prefix.img_path and data_prefix.seg_map_path=None: see docs/segmentation.md.
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# aAcc, mIoU and mAcc (mmseg's IoUMetric reports all three with iou_metrics=['mIoU']).
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
