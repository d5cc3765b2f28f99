"""Plain nn.Modules that make up MILA (no OpenMMLab imports)."""
from .attention import MILAAttention
from .block import MILABlock
from .conv import ConvLayer, Downsample, Stem
from .mlp import DropPath, Mlp
from .stage import MILAStage

__all__ = ['ConvLayer', 'Downsample', 'DropPath', 'MILAAttention', 'MILABlock', 'MILAStage', 'Mlp', 'Stem']
