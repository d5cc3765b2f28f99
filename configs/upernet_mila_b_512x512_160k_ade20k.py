"""UperNet + MILA-B, ADE20K, 512x512 crops, 160k iterations: the authors' recipe.

Paper: 51.9 mIoU single-scale, 52.5 multi-scale, 128M params, 1183 GFLOPs (512x2048).
Batch 2 images x 8 GPUs: ``tools/train.sh configs/upernet_mila_b_512x512_160k_ade20k.py 8``.
"""
_base_ = [
    './_base_/upernet_mila.py', './_base_/ade20k_512x512.py',
    './_base_/upernet_schedule_adamw_160k.py', 'mmseg::_base_/default_runtime.py'
]

# The authors' ImageNet-1K weights (their release, or mmmila's converted format); another path:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'data/MLLA_B.pth'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    # stage widths 96/192/384/768; the auxiliary head reads stage 2
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
