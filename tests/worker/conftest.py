"""The one-terminal, one-lane fixtures of tests/worker/helpers.py, for every worker test."""

from tests.worker.helpers import control, lane, paired_at_start, rig, sim

__all__ = ["control", "lane", "paired_at_start", "rig", "sim"]
