# Mask R-CNN with a MILA backbone and FPN: mmdet's stock Mask R-CNN (RPN, Shared2FC box head,
# 4-conv mask head, RoIAlign 7 / 14), with ResNet-50 replaced by MILA-T. The variant configs set
# `arch`, `drop_path_rate`, the pretrained checkpoint and the FPN input widths.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']

custom_imports = dict(imports=['mmmila'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='MILA',
        arch='tiny',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # The authors fine-tune with the stem/downsampling BatchNorms in train mode and nothing frozen.
        frozen_stages=-1,
        norm_eval=False,
        with_cp=False),
    # Stage widths C, 2C, 4C, 8C of MILA-T/S (C = 64); MILA-B overrides them (C = 96).
    neck=dict(in_channels=[64, 128, 256, 512]))
