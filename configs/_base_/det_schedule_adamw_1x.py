# The authors' detection optimisation, 1x: AdamW (lr 1e-4, betas 0.9/0.999, weight decay 0.05), no
# weight decay on parameters whose name contains 'norm' (every LayerNorm of MILA and the BatchNorms
# of its stem and downsampling layers), decay on everything else including biases; no gradient
# clipping, fp32. 12 epochs, linear warm-up over 500 iterations from 0.001x, lr x0.1 after epochs
# 8 and 11. The authors' configs also list Swin's keys (absolute_pos_embed,
# relative_position_bias_table, an_bias, ...): no MILA parameter has them, so they are left out.
_base_ = ['mmdet::_base_/schedules/schedule_1x.py']

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}))

# The learning rate above is for 8 GPUs x 2 images; `--cfg-options auto_scale_lr.enable=True`
# rescales it linearly for another total batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
