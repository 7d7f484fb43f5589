"""Loading a policy: read the files, resolve ``include:``, then merge, check and version.

    load_policy(path)            # PolicyError(issues=[...]) listing every problem
    load_policy_text(text, ...)  # same, from a string (tests, the HTTP service)
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from activelabel.errors import PolicyError

from ._build import TOP_KEYS, FileBuilder, FileDoc
from ._canonical import canonical_form, digest_of, version_of
from ._files import ALLOW_HINT, allowed_roots, outside, read_bounded
from ._lint import lint
from ._merge import Merger
from ._privacy import check_protect
from ._report import Reporter
from ._spec import API_VERSION, KIND, Metadata, OutputsSpec, PiiSpec, Policy
from ._yaml import Loc, YMap, parse_yaml

AllowPaths = Iterable[str | os.PathLike[str]] | None


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while a policy is built.

    Building allocates tens of objects per rule and frees almost none, so every
    collection pass walks a heap that only grows: with 20,000 rules that made
    loading and compiling grow faster than the rule count. Reference counting still
    frees what is dropped; the collector runs again as soon as the build is done.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_policy(path: str | os.PathLike[str], *, allow_paths: AllowPaths = None) -> Policy:
    """Load, merge and validate the policy at ``path``.

    Raises `PolicyError` carrying every problem found (file:line:column, rule id,
    suggestion, caret excerpt); relative paths inside the policy are relative to
    the policy file. Included files and enricher tables must lie in the policy's
    folder or in one of ``allow_paths`` (or ``$ACTIVELABEL_ALLOW_PATHS``); every
    file read is a regular file under a size limit (see docs/policy.md).

    >>> policy = load_policy("policy.yaml")          # doctest: +SKIP
    >>> list(policy.labels), policy.version           # doctest: +SKIP
    """
    file = os.fspath(path)
    rep = Reporter()
    try:
        text = _read_text(Path(file))
    except OSError as exc:
        rep.add(f"cannot read policy file: {exc.strerror or exc}", Loc(file, 0, 0))
        raise PolicyError(issues=rep.sorted_issues()) from exc
    with paused_gc():
        return _load(text, file, Path(file).parent, Path(file).resolve(), rep, allowed_roots(Path(file).parent, allow_paths))


def load_policy_text(
    text: str, filename: str = "<string>", base_dir: str | os.PathLike[str] | None = None, *,
    allow_paths: AllowPaths = None,
) -> Policy:  # fmt: skip
    """Load a policy from ``text``; ``filename`` names it in errors, ``base_dir`` anchors relative paths.

    ``base_dir`` defaults to the directory of ``filename`` when that is a real
    path, else the working directory; it is also the folder includes and tables
    must lie in, besides ``allow_paths``.
    """
    if base_dir is None:
        base = Path(filename).parent if not filename.startswith("<") else Path.cwd()
    else:
        base = Path(base_dir)
    key = (base / Path(filename).name).resolve() if not filename.startswith("<") else None
    return _load(text, filename, base, key, Reporter(), allowed_roots(base, allow_paths))


def _read_text(path: Path) -> str:
    data = read_bounded(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OSError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _expand_globs(
    includes: list[tuple[str, Loc]], base: Path, own: Path | None, rep: Reporter, roots: tuple[Path, ...],
) -> list[tuple[str, Loc]]:  # fmt: skip
    """``rules/*.yaml`` → every matching file but the including one, sorted by name; no match is an error."""
    out: list[tuple[str, Loc]] = []
    for inc, loc in includes:
        if not any(ch in inc for ch in "*?["):
            out.append((inc, loc))
            continue
        pattern = Path(inc)
        root = Path(pattern.anchor) if pattern.is_absolute() else base
        relative = str(pattern.relative_to(pattern.anchor)) if pattern.is_absolute() else inc
        # The fixed part of the pattern must be allowed before anything is walked (`/**/*.yaml` would walk the disk).
        fixed = root.joinpath(*[part for part in Path(relative).parts[: _first_glob_part(relative)]])
        if outside(fixed, roots):
            rep.add(f"cannot include `{inc}`: outside the policy's folder ({roots[0]})", loc,
                    suggestion=f"move the files into {roots[0]}, or {ALLOW_HINT}")
            continue
        matches = sorted(p for p in root.glob(relative) if p.is_file() and p.resolve() != own)
        if not matches:
            rep.add(f"no file matches include pattern `{inc}` (in {root})", loc)
            continue
        out += [(str(m) if pattern.is_absolute() else os.path.relpath(m, base), loc) for m in matches]
    return out


def _first_glob_part(relative: str) -> int:
    parts = Path(relative).parts
    return next((i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")), len(parts))


def _display(parent_file: str, parent_base: Path, include: str) -> str:
    if os.path.isabs(include):
        return os.path.normpath(include)
    if parent_file.startswith("<"):
        return os.path.normpath(str(parent_base / include))
    return os.path.normpath(os.path.join(os.path.dirname(parent_file), include))


# A top-level policy key at the start of a line: a file that failed to parse may still be quoted if it has one.
_POLICY_KEY_LINE = re.compile(r"^(?:apiVersion|kind|metadata|include|labels|enrichers|rules|tests|models)\s*:", re.M)


def _looks_like_policy(text: str, root: object, parsed: bool) -> bool:
    """Whether errors may quote ``text``: it parsed as a policy-shaped mapping, or it is policy-like text.

    Anything else (``/proc/self/environ``, ``/etc/passwd``, a secrets file) is
    reported by file and position only, never by content.
    """
    if "\x00" in text:
        return False
    if parsed:
        return isinstance(root, YMap) and any(k in root for k in TOP_KEYS)
    return _POLICY_KEY_LINE.search(text) is not None


def _load(text: str, file: str, base_dir: Path, key: Path | None, rep: Reporter, roots: tuple[Path, ...]) -> Policy:
    docs: list[FileDoc] = []
    seen: set[Path] = set()
    read_paths: list[Path] = [key] if key is not None else []

    def visit(text: str, file: str, base: Path, key: Path | None, chain: list[tuple[Path | None, str]], is_root: bool) -> None:
        rep.add_source(file, text)
        root, problems = parse_yaml(text, file)
        if not _looks_like_policy(text, root, root is not None and not problems):
            rep.hidden.add(file)
        for p in problems:
            rep.add(p.message, p.loc, suggestion=p.suggestion)
        builder = FileBuilder(rep, file, base)
        # A file that does not parse contributes nothing (and is not also reported as empty).
        doc = builder.doc if root is None and problems else builder.build(root, is_root=is_root)
        for inc, loc in _expand_globs(doc.includes, base, key, rep, roots):
            inc_path = Path(inc) if os.path.isabs(inc) else base / inc
            inc_key = inc_path.resolve()
            inc_file = _display(file, base, inc)
            chain_keys = [k for k, _ in chain] + [key]
            if inc_key in chain_keys:
                names = [f for _, f in chain] + [file]
                cycle = " -> ".join([*names[chain_keys.index(inc_key):], inc_file])
                rep.add(f"include cycle: {cycle}", loc, suggestion="remove one of the includes")
                continue
            if inc_key in seen:  # included twice through different files: merge it once
                continue
            if outside(inc_path, roots):
                rep.add(
                    f"cannot include `{inc}`: outside the policy's folder ({roots[0]})", loc,
                    suggestion=f"move it into {roots[0]}, or {ALLOW_HINT}",
                )
                continue
            try:
                inc_text = _read_text(inc_path)
            except OSError as exc:
                reason = "file not found" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))
                rep.add(f"cannot include `{inc}`: {reason} ({inc_path})", loc)
                continue
            seen.add(inc_key)
            read_paths.append(inc_key)
            visit(inc_text, inc_file, inc_path.parent, inc_key, [*chain, (key, file)], False)
        docs.append(doc)

    if key is not None:
        seen.add(key)
    visit(text, file, base_dir, key, [], True)
    root_doc = docs[-1]
    meta = root_doc.metadata
    for field in ("name", "version", "owner"):
        value = getattr(meta, field, None) if meta is not None else None
        if isinstance(value, str) and not value.isprintable():
            # These travel into logs, metric labels, file names and generated code.
            rep.add(f"`metadata.{field}` must be printable text (no control characters)", meta.loc if meta else Loc(file, 1, 1))
    merged = Merger(rep, roots)
    for doc in docs:
        merged.add(doc)
    merged.check()
    outputs = root_doc.outputs or OutputsSpec()
    check_protect(rep, merged.labels, outputs)
    if rep.issues:
        raise PolicyError(issues=rep.sorted_issues())
    lint(merged)
    metadata = root_doc.metadata or Metadata()
    policy_parts = merged.result()
    dependencies = tuple(
        dict.fromkeys(
            [*read_paths]
            + [e.path.resolve() for e in policy_parts["enrichers"] if e.type != "pii"]
            + [m.path.resolve() for m in policy_parts["models"]]
        )
    )
    pii = root_doc.pii or PiiSpec()
    canonical = canonical_form(root_doc.api_version or API_VERSION, root_doc.kind or KIND, metadata, **policy_parts,
                               outputs=outputs, redact=root_doc.redact, pii=pii)
    data, digest = digest_of(canonical)
    version = version_of(digest, metadata)
    return Policy(
        api_version=root_doc.api_version or API_VERSION,
        kind=root_doc.kind or KIND,
        metadata=metadata,
        digest=digest,
        version=version,
        source=file,
        base_dir=base_dir,
        files=tuple(rep.file_order),
        dependencies=dependencies,
        warnings=tuple(rep.sorted_issues(warnings=True)),
        canonical_json=data,
        **policy_parts,
        outputs=outputs,
        redact=root_doc.redact,
        pii=pii,
    )
