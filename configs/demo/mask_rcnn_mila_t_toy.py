"""The demo (``make demo``): Mask R-CNN + MILA-T of ``mask_rcnn_mila_t_3x.py`` on a toy COCO set, on CPU.

The model (MILA-T at its real width, FPN, RPN, RoI heads), the optimizer (AdamW, weight decay 0.05,
no decay on norms), the drop-path rate and the augmentation policy (flip + AutoAugment of
multi-scale / crop + multi-scale) are the 3x recipe's. Only what a 2-core CPU without pretrained
weights requires is changed, each for the reason given:

- data: the toy set of ``tools/data/make_toy_coco.py`` (4 classes of drawn shapes, 128 px images)
  instead of COCO, which is neither here nor trainable on a CPU; its 4 classes set the heads' width;
- image sizes: every pixel size of the recipe x 0.16, so that its test scale (short side 800) is
  the toy images' 128 px;
- no pretrained backbone (``init_cfg=None``): no ImageNet weights can be downloaded here, so MILA-T
  starts from its random init;
- RoIs: 64 sampled per image in training (recipe: 512, same 1:3 positive ratio), 100 proposals and
  at most 20 detections per image in testing (recipe: 1000 and 100). A toy image has 1-4 objects
  and 1/65 of the pixels of a 1333x800 COCO input, and the RoI heads' cost is per RoI, not per
  pixel: at the recipe's counts they would take most of each CPU step;
- schedule: 12 epochs over the 48 toy images of ``tools/demo.sh`` (2 x 2 images per iteration with
  ``tools/train.sh CONFIG 2``: 144 iterations) instead of 36 over COCO; lr steps after epochs 9
  and 11 (the recipe's 27/36 and 33/36 of training), warm-up over 30 iterations instead of 500;
- learning rate 5e-4 instead of 1e-4: the recipe's rate fine-tunes a pretrained backbone for
  ~264k iterations; here the whole network learns from random init in 144 (5e-4 was chosen for
  that, not compared against 1e-4 on this set);
- data loading in the training processes (``num_workers=0``: the 2 cores run the 2 trainers),
  logging every 8 iterations, one checkpoint at the end, a fixed seed (the demo's numbers repeat).
"""
_base_ = ['../mask_rcnn_mila_t_3x.py']

data_root = 'work_dirs/demo/toy_coco/'
classes = ('square', 'circle', 'triangle', 'star')
metainfo = dict(classes=classes, palette=[(220, 40, 40), (40, 200, 40), (40, 80, 220), (230, 200, 30)])
scale = 0.16  # the recipe's test scale (short side 800) maps to the toy images' 128 px


def _scaled(shorts):
    return [(int(1333 * scale), int(s * scale)) for s in shorts]


ms_scales = _scaled(range(480, 801, 32))

model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=len(classes)), mask_head=dict(num_classes=len(classes))),
    train_cfg=dict(rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='AutoAugment',
        policies=[
            [dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=_scaled((400, 500, 600)), keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range',
                     crop_size=(int(384 * scale), int(600 * scale)), allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(int(1333 * scale), int(800 * scale)), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=True, min_size=8),
                 pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=30),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=5e-4))
default_hooks = dict(
    logger=dict(interval=8),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
