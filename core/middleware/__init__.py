"""The middleware stack of a core application, one middleware a module."""

from core.middleware.access_log import access_log_middleware
from core.middleware.body_limit import body_limit_middleware
from core.middleware.correlation import CORRELATION_ID, correlation_middleware
from core.middleware.cors import cors_middleware
from core.middleware.errors import error_middleware, problem_response
from core.middleware.metrics import metrics_middleware
from core.middleware.security import security_headers
from core.middleware.tracing import tracing_middleware, tracing_middlewares

__all__ = [
    "CORRELATION_ID",
    "access_log_middleware",
    "body_limit_middleware",
    "correlation_middleware",
    "cors_middleware",
    "error_middleware",
    "metrics_middleware",
    "problem_response",
    "security_headers",
    "tracing_middleware",
    "tracing_middlewares",
]
