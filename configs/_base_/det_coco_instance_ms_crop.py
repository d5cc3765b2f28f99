# COCO 2017 instance segmentation with the authors' multi-scale + crop training augmentation
# (used by their 1x and 3x recipes alike): flip, then one of two policies chosen at random:
#   (a) resize the short side to one of 480, 512, ..., 800 (long side <= 1333);
#   (b) resize the short side to 400/500/600, crop a random 384-600 box, then resize as in (a).
# Normalisation (ImageNet mean/std, BGR -> RGB) and padding to a multiple of 32 are done by the
# model's DetDataPreprocessor. Testing is single-scale 1333x800 (mmdet's COCO base).
_base_ = ['mmdet::_base_/datasets/coco_instance.py']

data_root = 'data/coco/'
ms_scales = [(1333, short) for short in range(480, 801, 32)]

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='AutoAugment',
        policies=[
            [dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]

# 2 images per GPU; the recipe runs 8 GPUs, a total batch of 16 (see auto_scale_lr).
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric=['bbox', 'segm'],
    format_only=False)
test_evaluator = val_evaluator
