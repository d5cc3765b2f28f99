"""Mask R-CNN + MILA-T, 3x (36 epochs), COCO 2017: the authors' recipe (paper: 48.8 box AP, 43.8 mask AP).

Batch 2 images x 8 GPUs: ``tools/train.sh configs/mask_rcnn_mila_t_3x.py 8``.
The 1x recipe with the authors' two changes for 3x: 36 epochs (lr x0.1 after epochs 27 and 33) and
drop_path_rate 0.3.
"""
_base_ = './mask_rcnn_mila_t_1x.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]

model = dict(backbone=dict(drop_path_rate=0.3))
