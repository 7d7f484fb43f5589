"""The curated public surface of activelabel.service and activelabel.observability."""

from __future__ import annotations

import activelabel.observability as observability
import activelabel.service as service


def test_service_exports_are_sorted_and_importable():
    """activelabel.service.__all__ is sorted and every name in it resolves."""
    assert service.__all__ == sorted(service.__all__)
    assert all(hasattr(service, name) for name in service.__all__)
    assert {"create_app", "LabelingMiddleware", "LabelingSpanProcessor", "ServiceConfig"} <= set(service.__all__)


def test_observability_exports_are_sorted_and_importable():
    """activelabel.observability.__all__ is sorted and every name in it resolves."""
    assert observability.__all__ == sorted(observability.__all__)
    assert all(hasattr(observability, name) for name in observability.__all__)
