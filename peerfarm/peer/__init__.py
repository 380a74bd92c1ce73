"""One peer of the farm, split by job (see :mod:`peerfarm.peer.node` for the map)."""

from .node import Node
from .parts import IncompatiblePeer, NodeParts, NodeStats, Running

__all__ = ["IncompatiblePeer", "Node", "NodeParts", "NodeStats", "Running"]
