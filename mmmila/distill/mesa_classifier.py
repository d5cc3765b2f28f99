"""An mmpretrain image classifier with the authors' EMA self-distillation term ("MESA") in its loss.

The MILA authors train on ImageNet with an extra loss from 25% of training onward:
``mesa_weight * CE(logits, softmax(ema_logits))``, where ``ema_logits`` are the outputs of the EMA
copy of the model (eval mode, no gradient) on the same augmented batch. mmpretrain has no such
component; :class:`MESAClassifier` adds the term, :class:`~mmmila.distill.MESAHook` keeps the EMA
copy, hands it over as the teacher and switches the term on at the right time.
"""
from __future__ import annotations

import weakref
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.structures import DataSample


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets, averaged over the batch.

    Args:
        logits (Tensor): (B, K) scores of the student.
        target (Tensor): (B, K) probabilities (rows sum to 1).

    Returns:
        Tensor: scalar, ``mean_b sum_k -target[b, k] * log_softmax(logits)[b, k]``.
    """
    if logits.shape != target.shape:
        raise ValueError(f'logits {tuple(logits.shape)} and soft targets {tuple(target.shape)} '
                         'differ in shape')
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class MESAClassifier(ImageClassifier):
    """``ImageClassifier`` plus the EMA self-distillation loss ``loss_mesa``.

    While :attr:`mesa_active` is False (the default, and the first 25% of the authors' schedule)
    this is exactly mmpretrain's ``ImageClassifier``. When it is True the loss dict gains
    ``loss_mesa = mesa_weight * CE(logits, softmax(teacher(inputs)))``, the teacher being the module
    given to :meth:`set_mesa_teacher` (the EMA model, run in eval mode without gradient).

    Args:
        backbone (dict): backbone config.
        neck (dict | None): neck config. Defaults to None.
        head (dict | None): classification head config (a ``ClsHead``). Defaults to None.
        mesa_weight (float): weight of the distillation term; the authors use 1.0 / 1.5 / 2.0 for
            MILA-T / S / B. Defaults to 1.0.
        train_cfg (dict | None): e.g. ``dict(augments=[...])`` for Mixup / CutMix. Defaults to None.
        data_preprocessor (dict | None): data preprocessor config. Defaults to None.
        init_cfg (dict | list | None): initialisation config. Defaults to None.
    """

    def __init__(self, backbone: dict, neck: Optional[dict] = None, head: Optional[dict] = None,
                 mesa_weight: float = 1.0, train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        if not mesa_weight >= 0:
            raise ValueError(f'mesa_weight must be >= 0, got {mesa_weight}')
        if head is None:
            raise ValueError('MESAClassifier needs a classification head (head=dict(type=...))')
        super().__init__(backbone=backbone, neck=neck, head=head, train_cfg=train_cfg,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.mesa_weight = float(mesa_weight)
        self.mesa_active = False
        self._teacher_ref: Optional[weakref.ReferenceType] = None

    def set_mesa_teacher(self, teacher: Optional[nn.Module]) -> None:
        """Use ``teacher`` (normally the EMA copy of this model) for the distillation targets.

        Only a weak reference is kept: the teacher is not a sub-module, so it is not in this model's
        ``state_dict`` and is not trained; copies and pickles of the model (the EMA copy among
        them) come without a teacher.
        """
        if teacher is not None and teacher is self:
            raise ValueError('the MESA teacher must be a separate (EMA) copy, not the model itself')
        self._teacher_ref = None if teacher is None else weakref.ref(teacher)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state['_teacher_ref'] = None  # weak references cannot be pickled; copies start without a teacher
        return state

    @property
    def mesa_teacher(self) -> Optional[nn.Module]:
        """The attached teacher, or None."""
        return None if self._teacher_ref is None else self._teacher_ref()

    @torch.no_grad()
    def mesa_targets(self, inputs: torch.Tensor) -> torch.Tensor:
        """Softmax of the teacher's logits for ``inputs`` (B, 3, H, W) -> (B, K), no gradient."""
        teacher = self.mesa_teacher
        if teacher is None:
            raise RuntimeError('MESA distillation is active but no teacher is attached; add MESAHook to '
                               'custom_hooks (it attaches the EMA model) or call set_mesa_teacher()')
        if teacher.training:  # like the authors' EMA model: BatchNorm statistics frozen, no drop-path
            teacher.eval()
        return teacher(inputs, mode='tensor').float().softmax(dim=-1)

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample]) -> dict:
        """The head's losses, plus ``loss_mesa`` while :attr:`mesa_active` is True."""
        feats = self.extract_feat(inputs)
        cls_score = self.head(feats)
        losses = self.head._get_loss(cls_score, data_samples)
        if self.mesa_active and self.mesa_weight > 0:
            targets = self.mesa_targets(inputs)
            losses['loss_mesa'] = self.mesa_weight * soft_target_cross_entropy(cls_score, targets)
        return losses
