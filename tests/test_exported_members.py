"""The public surface: everything in `activelabel.__all__` exists, and `__all__` stays sorted."""

from __future__ import annotations

import activelabel


def test_every_public_name_resolves():
    """Each name in __all__ imports from the top-level package."""
    for name in activelabel.__all__:
        assert getattr(activelabel, name) is not None, name


def test_public_names_are_sorted_and_unique():
    """__all__ is kept sorted (case-sensitive) and without duplicates, like httpx's."""
    assert activelabel.__all__ == sorted(set(activelabel.__all__))


def test_errors_share_one_root():
    """Every exported error class derives from ActiveLabelError."""
    for name in activelabel.__all__:
        obj = getattr(activelabel, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, activelabel.ActiveLabelError), name
