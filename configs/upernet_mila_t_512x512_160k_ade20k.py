"""UperNet + MILA-T, ADE20K, 512x512 crops, 160k iterations: the authors' MILA-B recipe, adapted.

The authors released a UperNet recipe for MILA-B only. This config is mmmila's, not the paper's (no
paper result exists for it): everything is MILA-B's recipe except two settings derived from MILA-T:
- drop_path_rate 0.2: the authors' MILA-B recipe uses the same rate as its ImageNet pre-training
  (0.5); mmmila applies that rule to MILA-T, pre-trained with 0.2;
- the heads' inputs follow MILA-T's stage widths (64/128/256/512, auxiliary head on 256); the
  heads' own widths stay 512 (UPerHead) and 256 (FCN), as in the authors' model.
Batch 2 images x 8 GPUs: ``tools/train.sh configs/upernet_mila_t_512x512_160k_ade20k.py 8``.
The S and B configs derive from this one and state only what differs.
"""
_base_ = [
    './_base_/upernet_mila.py', './_base_/ade20k_512x512.py',
    './_base_/upernet_schedule_adamw_160k.py', 'mmseg::_base_/default_runtime.py'
]

# The authors' ImageNet-1K weights (their release, or mmmila's converted format); another path:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = 'data/MLLA_T.pth'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.2,
        # The authors fine-tune with the stem/downsampling BatchNorms in train mode, nothing frozen.
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
