"""The local control API and the dashboard's backend (HTTP, served inside the daemon).

``create_app`` builds the Starlette app over a ``FarmControl``; ``serve_http`` serves it with
hypercorn's trio worker inside the daemon's nursery.
"""

from peerfarm.api.access import access_decision
from peerfarm.api.app import UnknownJob, create_app
from peerfarm.api.server import BindError, serve_http

__all__ = ["BindError", "UnknownJob", "access_decision", "create_app", "serve_http"]
