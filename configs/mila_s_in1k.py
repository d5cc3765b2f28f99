"""MILA-S on ImageNet-1K at 224, the authors' recipe (paper: 84.4 top-1, 43M params, 7.3G FLOPs).

Batch 64 images x 8 GPUs = 512, lr 5e-4: ``tools/train.sh configs/mila_s_in1k.py 8``.
Evaluate the released weights: ``tools/test.sh configs/mila_s_in1k.py data/MLLA_S.pth 1``.
"""
_base_ = [
    './_base_/models/mila-s.py', './_base_/imagenet_mila_224.py', './_base_/imagenet_mila_adamw_300e.py',
    'mmpretrain::_base_/default_runtime.py'
]

custom_imports = dict(imports=['mmmila', 'mmmila.distill'], allow_failed_imports=False)

total_batch = 512  # 8 GPUs x 64
train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=5e-4 * total_batch / 512))
auto_scale_lr = dict(base_batch_size=total_batch)

# EMA of the weights (decay 0.9996 ** (total_batch / 4096)), validated and saved with each checkpoint,
# and the teacher of the self-distillation term (weight in the model config) from epoch 75 of 300.
custom_hooks = [
    dict(type='MESAHook', momentum=1 - 0.9996**(total_batch / 4096), start_ratio=0.25,
         priority='ABOVE_NORMAL')
]
