# The MILA ImageNet-1K classifier, shown for MILA-T (mila_s_in1k.py and mila_b_in1k.py state what
# differs): MILA backbone -> global average pooling -> linear head, trained with label smoothing
# 0.1, Mixup 0.8 / CutMix 1.0 and the authors' EMA self-distillation (weight 1.0 for MILA-T).
model = dict(
    type='MESAClassifier',
    backbone=dict(type='MILA', arch='tiny', drop_path_rate=0.2, out_indices=(3,)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        init_cfg=None,  # the classifier's init_cfg below covers the head
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    mesa_weight=1.0,
    # The authors' init: Linear weights truncated normal (std 0.02), biases 0; LayerNorm 1 / 0.
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ],
    # timm's Mixup with prob 1 and switch prob 0.5: one of the two per batch, with equal chances.
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
