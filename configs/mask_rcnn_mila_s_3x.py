"""Mask R-CNN + MILA-S, 3x (36 epochs), COCO 2017: the authors' recipe (paper: 50.5 box AP, 44.9 mask AP).

Batch 2 images x 8 GPUs: ``tools/train.sh configs/mask_rcnn_mila_s_3x.py 8``. MILA-T's 3x recipe
with the S backbone.
"""
_base_ = './mask_rcnn_mila_t_3x.py'

pretrained = 'data/MLLA_S.pth'

model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)))
