"""Mask R-CNN + MILA-T, 3x (36 epochs), COCO 2017: the authors' recipe (paper: 48.8 box AP, 43.8 mask AP).

Batch 2 images x 8 GPUs: ``tools/train.sh configs/mask_rcnn_mila_t_3x.py 8``.
"""
_base_ = [
    './_base_/mask_rcnn_mila_fpn.py', './_base_/det_coco_instance_ms_crop.py',
    './_base_/det_schedule_adamw_3x.py', 'mmdet::_base_/default_runtime.py'
]

# The authors' ImageNet-1K weights (their release, or mmmila's converted format); another path:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'data/MLLA_T.pth'

model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.3, init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
