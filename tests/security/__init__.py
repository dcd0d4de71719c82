"""The security suite: OWASP API Security Top 10 checks against the real system, through the
gateway, plus schema fuzzing (schemathesis) of the gateway's merged OpenAPI document."""
