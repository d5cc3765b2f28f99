# UperNet with a MILA backbone (mmseg's EncoderDecoder), the authors' segmentation model: UPerHead
# on the four stage outputs (pool scales 1/2/3/6, 512 channels, dropout 0.1), an auxiliary FCN head
# on stage 2 (one 3x3 conv of 256 channels, dropout 0.1, loss weight 0.4), SyncBN in both heads,
# cross-entropy, 150 ADE20K classes, whole-image inference. The heads' inputs are MILA-T/S's stage
# widths (64/128/256/512); the variant configs set `arch`, `drop_path_rate`, the checkpoint, and
# MILA-B's widths.
custom_imports = dict(imports=['mmmila'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # ImageNet mean / std in 0-255, BGR -> RGB
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))  # training batches are padded to the 512x512 crop (label padding ignored)

model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(type='MILA', out_indices=(0, 1, 2, 3)),
    decode_head=dict(
        type='UPerHead',
        in_channels=[64, 128, 256, 512],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=256,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
