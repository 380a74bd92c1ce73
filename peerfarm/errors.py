"""Every exception peerfarm raises on purpose lives here.

The rule (httpcore's ``map_exceptions``): trio and OS errors are converted at the I/O edges into
these narrow types, so callers catch one family and a peer's bad message can never surface as an
arbitrary exception. Anything a remote peer can cause is a ``RemoteProtocolError``: logged,
counted and dropped, never a crash.
"""

from __future__ import annotations


class PeerfarmError(Exception):
    """Base of every error peerfarm raises deliberately."""


class UsageError(PeerfarmError):
    """A user's mistake that the CLI reports as one clear line (bad argument, missing file)."""


class FrameRangeError(UsageError, ValueError):
    """A frame range an artist wrote that cannot be parsed; the message quotes the bad part."""


class RemoteProtocolError(PeerfarmError):
    """Something a peer sent is malformed, oversized, unauthenticated or otherwise unusable."""


class DecodeError(RemoteProtocolError):
    """Bytes that do not decode to a valid message or ledger value. Says what was wrong."""


class AuthenticationError(RemoteProtocolError):
    """A datagram or stream frame that failed AEAD authentication under every key we hold."""


class VersionMismatchError(RemoteProtocolError):
    """A message from a peer that speaks a protocol version we do not."""

    def __init__(self, message: str, *, version: int) -> None:
        super().__init__(message)
        self.version = version


class MessageTooLarge(PeerfarmError):
    """A message over a size cap (datagram payload, stream frame or file chunk)."""


class TransportError(PeerfarmError):
    """A network operation failed: refused, reset, timed out, unreachable, or closed."""


class LedgerError(PeerfarmError):
    """An operation on the ledger that its rules forbid (e.g. an illegal frame transition)."""


class IllegalTransition(LedgerError):
    """A frame state machine move that is not in the table; names the state and the event."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"illegal frame transition: event {event!r} in state {state!r}")
        self.state = state
        self.event = event


class StoreError(PeerfarmError):
    """The content-addressed store failed (missing blob, hash mismatch, disk full)."""


class BlobUnavailable(StoreError):
    """No reachable peer holds a blob this peer needs (say, a scene whose submitter is down)."""


class HashMismatch(StoreError):
    """Bytes received for a content hash do not hash to it."""


class RendererError(PeerfarmError):
    """A renderer could not be run or reported a failure."""


class ControlError(PeerfarmError):
    """The local control API failed: no daemon, unreachable, refused or bad token."""
