"""The replicated job ledger: pure data and merge rules (``model``), one replica (``ledger``),
its wire/disk encoding (``codec``), persistence (``store``) and the hybrid logical clock."""

from .codec import Delta, decode_deltas, encode_deltas
from .ledger import JobCounts, Ledger, LostClaim
from .model import FrameRecord, JobSpec, JobState, Output, SceneRef, Status

__all__ = [
    "Delta",
    "FrameRecord",
    "JobCounts",
    "JobSpec",
    "JobState",
    "Ledger",
    "LostClaim",
    "Output",
    "SceneRef",
    "Status",
    "decode_deltas",
    "encode_deltas",
]
