"""Mask R-CNN + MILA-T, 1x (12 epochs), COCO 2017: the authors' recipe (paper: 46.8 box AP, 42.1 mask AP).

Batch 2 images x 8 GPUs: ``tools/train.sh configs/mask_rcnn_mila_t_1x.py 8``. The S and B configs,
and the 3x ones, derive from this one and state only what differs.
"""
_base_ = [
    './_base_/mask_rcnn_mila_fpn.py', './_base_/det_coco_instance_ms_crop.py',
    './_base_/det_schedule_adamw_1x.py', './_base_/det_runtime.py'
]

# The authors' ImageNet-1K weights (their release, or mmmila's converted format); another path:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'data/MLLA_T.pth'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.1,
        # The authors fine-tune with the stem/downsampling BatchNorms in train mode and nothing frozen.
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
