"""peerfarm: a render farm with no server.

Every host runs one daemon (``peerfarm up``). Daemons discover each other with mDNS, gossip a
replicated job ledger, and claim frames with leases, so any peer can submit, render or report.
"""

__version__ = "0.1.0"

#: Wire protocol version carried by every envelope. Bump it when a message changes shape.
PROTOCOL_VERSION = 1
