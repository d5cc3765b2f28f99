"""Helpers of mmmila's command-line tools (config edits for the launchers, input checks).

Nothing here is imported by ``import mmmila``; the tools import the submodules they use.
"""
