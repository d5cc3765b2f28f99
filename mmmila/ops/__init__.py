"""MILA's linear attention op. The model calls only :func:`mila_linear_attention`."""
from .reference import mila_linear_attention_ref
from .rope2d import apply_rope2d, rope2d_cos_sin


def mila_linear_attention(qk, v, hw, num_heads, backend='auto'):
    """MILA linear attention before LePE; see :func:`mila_linear_attention_ref` for shapes.

    Args:
        backend (str): 'auto' | 'torch' | 'triton'. Defaults to 'auto'.
    """
    return mila_linear_attention_ref(qk, v, hw, num_heads)


__all__ = ['mila_linear_attention', 'mila_linear_attention_ref', 'rope2d_cos_sin', 'apply_rope2d']
