"""Which optional extra provides which third-party module, and the message that says so.

The core install (engine, CEL, policy, CLI) needs none of these; a command or an import
that reaches one that is absent says which extra to install instead of a bare
``No module named 'starlette'`` (as httpx's CLI does for ``httpx[cli]``).
"""

from __future__ import annotations

import importlib

from activelabel.errors import MissingExtraError

#: Top-level module → the extra (pyproject.toml's [project.optional-dependencies]) that installs it.
MODULE_EXTRAS: dict[str, str] = {
    "starlette": "service", "uvicorn": "service", "httptools": "service", "uvloop": "service",
    "multipart": "service", "python_multipart": "service", "prometheus_client": "service",
    "opentelemetry": "service", "httpx": "service", "watchfiles": "service",
    "confluent_kafka": "kafka",
    "sklearn": "ml", "joblib": "ml", "skops": "ml", "onnxruntime": "ml", "river": "ml", "scipy": "ml",
    "matplotlib": "report", "jinja2": "report",
    "cryptography": "audit",
}

#: What each extra is for, in the words of the message.
EXTRA_PURPOSE: dict[str, str] = {
    "service": "the HTTP/OTLP service (activelabel serve, activelabel.service)",
    "kafka": "the Kafka stream worker (activelabel stream, activelabel.stream)",
    "ml": "models (a policy's `models:`, activelabel train, online learning)",
    "report": "the HTML quality report (activelabel report --html)",
    "audit": "the signed decision audit log (--audit DIR, activelabel audit)",
}


def missing_extra(exc: BaseException) -> MissingExtraError | None:
    """The :class:`MissingExtraError` behind ``exc`` (or its causes) when an extra's module is absent, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MissingExtraError):
            return seen
        if isinstance(seen, ModuleNotFoundError) and seen.name:
            extra = MODULE_EXTRAS.get(seen.name.split(".")[0])
            if extra is not None:
                return _error(extra, seen.name)
        seen = seen.__cause__ or seen.__context__
    return None


def require_extra(extra: str, *modules: str) -> None:
    """Import ``modules``; raise :class:`MissingExtraError` naming ``extra`` when one is absent."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise _error(extra, exc.name or name) from exc


def _error(extra: str, module: str) -> MissingExtraError:
    return MissingExtraError(
        f"{EXTRA_PURPOSE[extra]} needs the [{extra}] extra, and {module!r} is not installed: "
        f"pip install 'activelabel[{extra}]' (or 'activelabel[all]' for everything)",
        extra=extra, module=module)
