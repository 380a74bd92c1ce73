"""peerfarm: a render farm with no server.

Every host runs one daemon (``peerfarm up``). Daemons discover each other with mDNS, gossip a
replicated job ledger, and claim frames with leases, so any peer can submit, render or report.
"""

__version__ = "0.1.0"

#: Wire protocol version carried by every envelope. Bump it when a message changes shape.
#: 2: the ledger carries job-end notices (N), host holds (W) and a done frame's peak memory,
#: which protocol-1 peers cannot decode; so protocol 1 is no longer spoken (MIN_PROTOCOL_VERSION).
PROTOCOL_VERSION = 2
