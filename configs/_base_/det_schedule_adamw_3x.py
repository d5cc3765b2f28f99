# The authors' detection optimisation, 3x: as det_schedule_adamw_1x.py (AdamW, lr 1e-4, weight
# decay 0.05, no decay on 'norm' parameters, 500-iteration warm-up) over 36 epochs, lr x0.1 after
# epochs 27 and 33.
_base_ = ['./det_schedule_adamw_1x.py']

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
