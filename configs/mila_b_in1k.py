"""MILA-B on ImageNet-1K at 224, the authors' recipe (paper: 85.3 top-1, 96M params, 16.2G FLOPs).

Batch 64 images x 8 GPUs = 512, lr 5e-4: ``tools/train.sh configs/mila_b_in1k.py 8``.
Evaluate the released weights: ``tools/test.sh configs/mila_b_in1k.py data/MLLA_B.pth 1``.
MILA-T's recipe with the B backbone (head input 768), its stochastic depth (0.5), distillation
weight (2.0) and batch.
"""
_base_ = './mila_t_in1k.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=768), mesa_weight=2.0)

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
