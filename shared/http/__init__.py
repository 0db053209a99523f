"""The HTTP API: the Starlette app (``app``), its OpenAPI document (``openapi``) and the one mapping
of errors to ``application/problem+json`` responses (``problems``)."""
