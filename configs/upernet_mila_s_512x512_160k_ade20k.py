"""UperNet + MILA-S, ADE20K, 512x512 crops, 160k iterations: the authors' MILA-B recipe, adapted.

The authors released a UperNet recipe for MILA-B only. This config is mmmila's, not the paper's (no
paper result exists for it): everything is MILA-B's recipe except two settings derived from MILA-S:
- drop_path_rate 0.3: the authors' MILA-B recipe uses the same rate as its ImageNet pre-training
  (0.5); mmmila applies that rule to MILA-S, pre-trained with 0.3;
- the heads' inputs follow MILA-S's stage widths (64/128/256/512, auxiliary head on 256, as for
  MILA-T); the heads' own widths stay 512 (UPerHead) and 256 (FCN), as in the authors' model.
Batch 2 images x 8 GPUs: ``tools/train.sh configs/upernet_mila_s_512x512_160k_ade20k.py 8``.
"""
_base_ = './upernet_mila_t_512x512_160k_ade20k.py'

pretrained = 'data/MLLA_S.pth'

model = dict(backbone=dict(arch='small', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained)))
