"""Mask R-CNN + MILA-B, 3x (36 epochs), COCO 2017: DERIVED by mmmila, not an authors' recipe.

The authors released no MILA-B 3x config, weights or result. This config applies to their MILA-B 1x
recipe the two changes their own T and S configs make from 1x to 3x: the 36-epoch schedule (lr
x0.1 after epochs 27 and 33) and drop_path_rate 0.1 -> 0.3. Everything else (AdamW lr 1e-4, weight
decay 0.05, batch 2 x 8 GPUs, multi-scale + crop augmentation) is shared by all their recipes.
There is no paper number to compare with. Written as MILA-T's 3x recipe with the B backbone.
"""
_base_ = './mask_rcnn_mila_t_3x.py'

pretrained = 'data/MLLA_B.pth'

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
