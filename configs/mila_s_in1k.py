"""MILA-S on ImageNet-1K at 224, the authors' recipe (paper: 84.4 top-1, 43M params, 7.3G FLOPs).

Batch 64 images x 8 GPUs = 512, lr 5e-4: ``tools/train.sh configs/mila_s_in1k.py 8``.
Evaluate the released weights: ``tools/test.sh configs/mila_s_in1k.py data/MLLA_S.pth 1``.
MILA-T's recipe with the S backbone, its stochastic depth (0.3), distillation weight (1.5) and batch.
"""
_base_ = './mila_t_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.3), mesa_weight=1.5)

total_batch = 512  # 8 GPUs x 64
train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=5e-4 * total_batch / 512))
auto_scale_lr = dict(base_batch_size=total_batch)
custom_hooks = [  # the EMA decay follows the total batch: 0.9996 ** (total_batch / 4096)
    dict(type='MESAHook', momentum=1 - 0.9996**(total_batch / 4096), start_ratio=0.25,
         priority='ABOVE_NORMAL')
]
