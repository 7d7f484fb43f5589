"""Imported first by ``activelabel.service``: without the [service] extra, say to install it."""

from activelabel._extras import require_extra

require_extra("service", "starlette", "uvicorn", "prometheus_client", "httpx", "opentelemetry.proto", "watchfiles")
