"""Mask R-CNN + MILA-B, 1x (12 epochs), COCO 2017: the authors' recipe (paper: 50.5 box AP, 45.0 mask AP).

Batch 2 images x 8 GPUs: ``tools/train.sh configs/mask_rcnn_mila_b_1x.py 8``.
"""
_base_ = [
    './_base_/mask_rcnn_mila_fpn.py', './_base_/det_coco_instance_ms_crop.py',
    './_base_/det_schedule_adamw_1x.py', 'mmdet::_base_/default_runtime.py'
]

# The authors' ImageNet-1K weights (their release, or mmmila's converted format); another path:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'data/MLLA_B.pth'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.1, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
