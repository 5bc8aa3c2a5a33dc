"""The lane worker: one process serving one terminal (``python -m multipair.worker``)."""

from multipair.worker.lane import Lane, LaneDeps

__all__ = ["Lane", "LaneDeps"]
