"""Mask R-CNN + MILA-B, 1x (12 epochs), COCO 2017: the authors' recipe (paper: 50.5 box AP, 45.0 mask AP).

Batch 2 images x 8 GPUs: ``tools/train.sh configs/mask_rcnn_mila_b_1x.py 8``. MILA-T's 1x recipe
with the B backbone (stage widths 96/192/384/768 into the FPN).
"""
_base_ = './mask_rcnn_mila_t_1x.py'

pretrained = 'data/MLLA_B.pth'

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
