"""MILA backbone (Mamba-Inspired Linear Attention, NeurIPS 2024), one class for all tasks.

Registered as ``MILA`` in mmpretrain's, mmdet's and mmseg's ``MODELS`` by ``mmmila/registry.py``.
Module names follow the authors' checkpoints, so their released files load after a prefix change.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule

from mmmila.checkpoint.loading import load_pretrained_backbone
from mmmila.models.layers import MILAStage, Stem
from mmmila.ops.checks import check_head_layout
from mmmila.ops.dispatch import check_backend


class MILA(BaseModule):
    """MILA backbone.

    Args:
        arch (str | dict): 'tiny' / 'small' / 'base' (or 't' / 's' / 'b'), or a dict with
            ``embed_dims`` (int), ``depths`` (4 ints) and ``num_heads`` (4 ints). Defaults to 'tiny'.
        in_channels (int): image channels. Defaults to 3.
        mlp_ratio (float): MLP hidden width / C. Defaults to 4.
        drop_path_rate (float): stochastic depth, rising linearly over all blocks. Defaults to 0.2.
        out_indices (Sequence[int]): stages whose normalised outputs (``norm{i}``) are returned as
            (B, C*2^i, H_i, W_i) maps; negative values count from the end. Defaults to (3,).
        frozen_stages (int): freeze the stem and stages 0..frozen_stages-1 (their downsampling
            included); -1 freezes nothing. Defaults to -1.
        norm_eval (bool): keep BatchNorm layers in eval mode while training. Defaults to False.
        with_cp (bool): activation checkpointing per block. Defaults to False.
        attn_backend (str): implementation of the blocks' ops (the linear attention and the
            depthwise-convolution chains), 'auto' | 'torch' | 'triton'. Defaults to 'auto' (Triton
            for CUDA tensors when available).
        init_cfg (dict | list | None): e.g. ``dict(type='Pretrained', checkpoint='MLLA_T.pth')``;
            the authors' format and mmmila's own are both accepted. Defaults to None.
    """

    arch_settings = {
        'tiny': dict(embed_dims=64, depths=(2, 4, 8, 4), num_heads=(2, 4, 8, 16)),
        'small': dict(embed_dims=64, depths=(3, 6, 21, 6), num_heads=(2, 4, 8, 16)),
        'base': dict(embed_dims=96, depths=(3, 6, 21, 6), num_heads=(3, 6, 12, 24)),
    }
    arch_aliases = {'t': 'tiny', 's': 'small', 'b': 'base'}
    num_stages = 4

    def __init__(self, arch: str | dict = 'tiny', in_channels: int = 3, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.2, out_indices: Sequence[int] = (3,),
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 attn_backend: str = 'auto', init_cfg: dict | list | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch = self._parse_arch(arch)
        embed_dims, depths, num_heads = (self.arch[k] for k in ('embed_dims', 'depths', 'num_heads'))
        self.embed_dims = [embed_dims * 2**i for i in range(self.num_stages)]
        for i, (c, nh) in enumerate(zip(self.embed_dims, num_heads)):
            try:
                check_head_layout(c, nh)
            except ValueError as err:
                raise ValueError(f'stage {i}: {err}') from None
        self.out_indices = self._parse_out_indices(out_indices)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}], got {frozen_stages}')
        check_backend(attn_backend, 'attn_backend')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.patch_embed = Stem(in_channels, embed_dims)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(self.num_stages):
            start = sum(depths[:i])
            self.layers.append(MILAStage(
                self.embed_dims[i], depths[i], num_heads[i], dpr[start:start + depths[i]],
                downsample=i < self.num_stages - 1, mlp_ratio=mlp_ratio, with_cp=with_cp,
                attn_backend=attn_backend))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.embed_dims[i]))
        self._freeze_stages()

    # ---- argument parsing ----------------------------------------------------------------------
    def _parse_arch(self, arch: str | dict) -> dict:
        if isinstance(arch, str):
            name = self.arch_aliases.get(arch.lower(), arch.lower())
            if name not in self.arch_settings:
                raise ValueError(f'unknown MILA arch {arch!r}; choose from {sorted(self.arch_settings)} '
                                 f'or pass a dict with embed_dims, depths and num_heads')
            return dict(self.arch_settings[name])
        if not isinstance(arch, dict):
            raise ValueError(f'arch must be a str or a dict, got {type(arch).__name__}')
        need = {'embed_dims', 'depths', 'num_heads'}
        if set(arch) != need:
            raise ValueError(f'an arch dict needs exactly the keys {sorted(need)}, got {sorted(arch)}')
        if len(arch['depths']) != self.num_stages or len(arch['num_heads']) != self.num_stages:
            raise ValueError(f'depths and num_heads need {self.num_stages} entries, got '
                             f"{list(arch['depths'])} and {list(arch['num_heads'])}")
        return dict(embed_dims=int(arch['embed_dims']), depths=tuple(arch['depths']),
                    num_heads=tuple(arch['num_heads']))

    def _parse_out_indices(self, out_indices: Sequence[int] | int) -> tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        parsed = []
        for i in out_indices:
            if not -self.num_stages <= i < self.num_stages:
                raise ValueError(f'out_indices entry {i} is out of range for {self.num_stages} stages')
            parsed.append(i % self.num_stages)
        if len(set(parsed)) != len(parsed):
            raise ValueError(f'out_indices has duplicates: {list(out_indices)}')
        return tuple(sorted(parsed))

    # ---- training flags ------------------------------------------------------------------------
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed] + [self.layers[i] for i in range(self.frozen_stages)]
        frozen += [getattr(self, f'norm{i}') for i in range(self.frozen_stages) if i in self.out_indices]
        for module in frozen:
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'MILA':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ---- weights -------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Truncated-normal Linear init, or a strict load of a Pretrained checkpoint."""
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            load_pretrained_backbone(self, self.init_cfg, MMLogger.get_current_instance())
            self._is_init = True
            return
        super().init_weights()
        if self.init_cfg is None:
            self.apply(_init_linear_and_norm)

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Image (B, 3, H, W) -> one (B, C*2^i, ceil(H/2^(i+2)), ceil(W/2^(i+2))) map per out index."""
        x, hw = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            out, out_hw, x, hw = stage(x, hw)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(out.transpose(1, 2).reshape(out.shape[0], out.shape[2], *out_hw).contiguous())
        return tuple(outs)


def _init_linear_and_norm(m: nn.Module) -> None:
    """The authors' init: Linear weights truncated normal (std 0.02), biases 0; LayerNorm 1 / 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
