"""A config's text without yapf: for the test suites whose Runners log and dump their config."""
from __future__ import annotations


def plain_config_text(cfg) -> str:
    """``key = repr(value)``, one line per top-level entry: valid Python that reads back as ``cfg``."""
    return ''.join(f'{key} = {value!r}\n' for key, value in cfg.to_dict().items())
