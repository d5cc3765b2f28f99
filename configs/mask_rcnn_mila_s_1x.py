"""Mask R-CNN + MILA-S, 1x (12 epochs), COCO 2017: the authors' recipe (paper: 49.2 box AP, 44.2 mask AP).

Batch 2 images x 8 GPUs: ``tools/train.sh configs/mask_rcnn_mila_s_1x.py 8``. MILA-T's 1x recipe
with the S backbone.
"""
_base_ = './mask_rcnn_mila_t_1x.py'

pretrained = 'data/MLLA_S.pth'

model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)))
