"""Reading checkpoint files (the trust policy lives here; see docs/checkpoints.md)."""
from __future__ import annotations

from mmengine.runner.checkpoint import CheckpointLoader


def load_checkpoint_file(path: str, map_location: str = 'cpu') -> dict:
    """Read a checkpoint file (local path or URL) into a dict."""
    return CheckpointLoader.load_checkpoint(path, map_location=map_location)
