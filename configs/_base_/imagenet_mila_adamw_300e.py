# The MILA authors' ImageNet-1K optimisation: 300 epochs, AdamW (betas 0.9/0.999, eps 1e-8,
# weight decay 0.05, none on biases and 1-D parameters), gradient clipping at norm 5, lr
# 5e-4 x total_batch / 512 with a 20-epoch linear warm-up from 1e-3 x lr and a per-iteration cosine
# decay to 1e-2 x lr (their warmup_lr 5e-7 and min_lr 5e-6, scaled like lr).
# The top-level config sets lr and auto_scale_lr.base_batch_size for its total batch size.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0),
)

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=20, end=300,
         convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

auto_scale_lr = dict(base_batch_size=1024)
