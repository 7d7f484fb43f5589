"""Reading the files a policy names: regular files only, bounded in size and time, inside allowed folders.

A policy is often edited by someone other than whoever runs the service, so the
files it makes the runtime read are constrained:

- **regular files only**: a FIFO would block the loader forever and ``/dev/zero``
  would read without end; both are refused before a byte is read.
- **bounded size**: `MAX_POLICY_FILE_BYTES` for a policy or an included file,
  `MAX_TABLE_FILE_BYTES` for an enricher table.
- **bounded time**: a read that has not finished after `READ_TIMEOUT_S` (a hung
  network mount) is abandoned with an error.
- **inside the policy's folder**: an include or a table outside the root policy's
  folder is refused unless its folder is allowed (`allow_paths=` of `load_policy`,
  ``--allow-path DIR`` on the command line, or `ALLOW_PATHS_ENV`), so a policy
  edit cannot make the service read ``/proc/self/environ`` or ``/etc/passwd``.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

MAX_POLICY_FILE_BYTES = 8 * 1024 * 1024
"""Largest policy or included file: 8 MiB."""

MAX_TABLE_FILE_BYTES = 256 * 1024 * 1024
"""Largest enricher table (CSV, JSON or SQLite): 256 MiB."""

READ_TIMEOUT_S = 10.0
"""Seconds a policy file read may take before it is abandoned."""

ALLOW_PATHS_ENV = "ACTIVELABEL_ALLOW_PATHS"
"""Environment variable: extra folders (separated by ``os.pathsep``) policies may read from."""

ALLOW_HINT = f"allow its folder with `activelabel --allow-path DIR <command> ...` (or ${ALLOW_PATHS_ENV})"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def check_regular(path: Path, limit: int) -> None:
    """OSError unless ``path`` is a regular file of at most ``limit`` bytes (stat only, never opens)."""
    st = os.stat(path)
    _check_stat(st, limit)


def _check_stat(st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise OSError(f"{st.st_size:,} bytes, over the {limit:,}-byte limit")


def read_bounded(path: Path, limit: int = MAX_POLICY_FILE_BYTES, timeout_s: float = READ_TIMEOUT_S) -> bytes:
    """The bytes of regular file ``path`` (at most ``limit``), read within ``timeout_s``.

    Opened non-blocking, so opening a FIFO returns at once (and is then refused);
    the size is checked on the open descriptor, so a swap between check and read
    cannot smuggle in a device.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        _check_stat(os.fstat(fd), limit)
        result: list[bytes] = []
        failure: list[OSError] = []

        def read() -> None:
            try:
                chunks = []
                total = 0
                while True:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:  # the file grew after the check
                        raise OSError(f"more than {limit:,} bytes, over the limit")
                    chunks.append(chunk)
                result.append(b"".join(chunks))
            except OSError as exc:  # handed to the caller's thread
                failure.append(exc)

        # A thread, because a read from a hung mount cannot be interrupted otherwise.
        reader = threading.Thread(target=read, name="activelabel-policy-read", daemon=True)
        reader.start()
        reader.join(timeout_s)
        if reader.is_alive():
            fd = -1  # the stuck reader still owns it; closing it under the thread is unsafe
            raise OSError(f"read did not finish within {timeout_s:g} s")
        if failure:
            raise failure[0]
        return result[0]
    finally:
        if fd >= 0:
            os.close(fd)


def allowed_roots(policy_dir: Path, allow_paths: Iterable[str | os.PathLike[str]] | None) -> tuple[Path, ...]:
    """The folders a policy in ``policy_dir`` may read from: its own, ``allow_paths`` and `ALLOW_PATHS_ENV`."""
    extra = [os.fspath(p) for p in allow_paths or ()]
    extra += [p for p in os.environ.get(ALLOW_PATHS_ENV, "").split(os.pathsep) if p]
    return tuple(dict.fromkeys([policy_dir.resolve(), *(Path(p).resolve() for p in extra)]))


def outside(path: Path, roots: tuple[Path, ...]) -> bool:
    """True when ``path`` (resolved, so symlinks and ``..`` cannot escape) is under none of ``roots``."""
    real = path.resolve()
    return not any(real == r or real.is_relative_to(r) for r in roots)
