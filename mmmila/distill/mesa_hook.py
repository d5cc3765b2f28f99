"""MESAHook: mmengine's EMA of the weights, whose averaged model is also the distillation teacher."""
from __future__ import annotations

from mmengine.hooks import EMAHook
from mmengine.model import is_model_wrapper
from mmengine.runner.loops import EpochBasedTrainLoop


class MESAHook(EMAHook):
    """Keep an EMA copy of the model and use it as the teacher of :class:`MESAClassifier`.

    It is mmengine's ``EMAHook`` (``ExponentialMovingAverage``: ``ema = (1 - momentum) * ema +
    momentum * model`` after every iteration; validation and saved checkpoints use the EMA weights),
    plus two things: before the run it attaches the EMA model to the classifier as the teacher, and
    before every training iteration it switches the distillation term on once training has reached
    ``start_ratio`` of its length. The authors compare epochs: the term is on from epoch
    ``int(start_ratio * max_epochs)`` (0-based) in epoch-based training, from iteration
    ``int(start_ratio * max_iters)`` in iteration-based training.

    Args:
        start_ratio (float): fraction of training after which the term is on, in [0, 1]. Defaults to
            0.25 (the authors' value).
        momentum (float): EMA momentum, ``1 - decay``; the authors use decay
            ``0.9996 ** (total_batch / 4096)``. Defaults to 1e-4 (decay 0.9999, total batch 1024).
        update_buffers (bool): average the buffers (BatchNorm statistics) too, as the authors' EMA
            does (it averages the whole state dict). Defaults to True.
        interval (int): update the EMA every ``interval`` iterations. Defaults to 1.
        begin_iter (int): first iteration of the EMA (copied before). Defaults to 0.
        begin_epoch (int): first epoch of the EMA (copied before). Defaults to 0.
        strict_load (bool): strict loading of a resumed EMA state. Defaults to False.
    """

    priority = 'NORMAL'

    def __init__(self, start_ratio: float = 0.25, momentum: float = 1e-4, update_buffers: bool = True,
                 interval: int = 1, begin_iter: int = 0, begin_epoch: int = 0,
                 strict_load: bool = False) -> None:
        if not 0.0 <= start_ratio <= 1.0:
            raise ValueError(f'start_ratio must be in [0, 1], got {start_ratio}')
        if not 0.0 < momentum < 1.0:
            raise ValueError(f'momentum (1 - EMA decay) must be in (0, 1), got {momentum}')
        super().__init__(ema_type='ExponentialMovingAverage', strict_load=strict_load,
                         begin_iter=begin_iter, begin_epoch=begin_epoch, momentum=momentum,
                         update_buffers=update_buffers, interval=interval)
        self.start_ratio = start_ratio
        self._start = 0
        self._by_epoch = True

    def before_run(self, runner) -> None:
        super().before_run(runner)
        if not hasattr(self.src_model, 'set_mesa_teacher'):
            raise TypeError(f'MESAHook needs a model with set_mesa_teacher() (type=MESAClassifier), '
                            f'got {type(self.src_model).__name__}')
        self.ema_model.module.eval()
        self.src_model.set_mesa_teacher(self.ema_model.module)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        loop = runner.train_loop
        self._by_epoch = isinstance(loop, EpochBasedTrainLoop)
        total = loop.max_epochs if self._by_epoch else loop.max_iters
        self._start = int(self.start_ratio * total)

    def is_active(self, runner) -> bool:
        """Whether the distillation term is on for the current training iteration."""
        now = runner.epoch if self._by_epoch else runner.iter
        return now >= self._start

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._model(runner).mesa_active = self.is_active(runner)

    def after_train(self, runner) -> None:
        self._model(runner).mesa_active = False

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model
