"""UperNet + MILA-B, ADE20K, 512x512 crops, 160k iterations: the authors' recipe.

Paper: 51.9 mIoU single-scale, 52.5 multi-scale, 128M params, 1183 GFLOPs (512x2048).
Batch 2 images x 8 GPUs: ``tools/train.sh configs/upernet_mila_b_512x512_160k_ade20k.py 8``.
Written as the MILA-T config (which adapts this recipe) with the B backbone.
"""
_base_ = './upernet_mila_t_512x512_160k_ade20k.py'

pretrained = 'data/MLLA_B.pth'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5, init_cfg=dict(checkpoint=pretrained)),
    # stage widths 96/192/384/768; the auxiliary head reads stage 2
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
