# Mask R-CNN with a MILA backbone and FPN: mmdet's stock Mask R-CNN (RPN, Shared2FC box head,
# 4-conv mask head, RoIAlign 7 / 14), with ResNet-50 replaced by MILA returning its four stages.
# The variant configs set `arch`, `drop_path_rate` and the pretrained checkpoint; the FPN inputs
# below are the stage widths C, 2C, 4C, 8C of MILA-T/S (C = 64), which MILA-B overrides (C = 96).
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']

custom_imports = dict(imports=['mmmila'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='MILA', out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[64, 128, 256, 512]))
