"""MILA-T on ImageNet-1K at 224, the authors' recipe (paper: 83.5 top-1, 25M params, 4.2G FLOPs).

Batch 128 images x 8 GPUs = 1024, lr 1e-3: ``tools/train.sh configs/mila_t_in1k.py 8``.
Evaluate the released weights: ``tools/test.sh configs/mila_t_in1k.py data/MLLA_T.pth 1``.
The S and B configs derive from this one and state only what differs.
"""
_base_ = [
    './_base_/models/mila-t.py', './_base_/imagenet_mila_224.py', './_base_/imagenet_mila_adamw_300e.py',
    './_base_/cls_runtime.py'
]

custom_imports = dict(imports=['mmmila', 'mmmila.distill'], allow_failed_imports=False)

total_batch = 1024  # 8 GPUs x 128
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=5e-4 * total_batch / 512))
auto_scale_lr = dict(base_batch_size=total_batch)

# EMA of the weights (decay 0.9996 ** (total_batch / 4096)), validated and saved with each checkpoint,
# and the teacher of the self-distillation term (weight in the model config) from epoch 75 of 300.
custom_hooks = [
    dict(type='MESAHook', momentum=1 - 0.9996**(total_batch / 4096), start_ratio=0.25,
         priority='ABOVE_NORMAL')
]
