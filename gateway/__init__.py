"""The aioshop gateway: one entry point with edge auth, rate limits, load balancing and breakers.

``create_gateway_app(settings)`` builds it on ``core.create_app``; ``run_gateway`` serves it,
over HTTPS when given a certificate; ``python -m gateway`` runs it from the command line.
"""

from gateway.app import create_gateway_app, run_gateway
from gateway.settings import Settings

__all__ = ["Settings", "create_gateway_app", "run_gateway"]
