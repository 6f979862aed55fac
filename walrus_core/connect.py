"""Opening a log by URL: a local directory, or a log some installed plugin serves remotely.

``connect("file:///var/lib/app/wal")`` (or a plain path) opens a local
:class:`~walrus_core.Walrus`. Any other scheme is looked up among the entry points of the group
``walrus.remotes``: the entry point's name is the scheme, and it names a callable
``factory(url, **options)`` that returns a :class:`~walrus_core.WalrusLog`. The core never
imports a remote by name, as it never imports a storage backend by name.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from walrus_core.api import Walrus
from walrus_core.distributions import remote_install_instructions
from walrus_core.errors import BackendUnavailableError, InvalidConfigError
from walrus_core.log import WalrusLog

__all__ = ["REMOTE_ENTRY_POINT_GROUP", "connect", "installed_schemes"]

#: The entry-point group of remote log implementations: ``scheme = "module:factory"``.
REMOTE_ENTRY_POINT_GROUP = "walrus.remotes"
_LOCAL_SCHEMES = ("file",)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def installed_schemes() -> list[str]:
    """The URL schemes :func:`connect` can open here: ``file`` and every installed remote."""
    remote = {ep.name for ep in importlib.metadata.entry_points(group=REMOTE_ENTRY_POINT_GROUP)}
    return sorted({*_LOCAL_SCHEMES, *remote})


def connect(url: str | os.PathLike[str], **options: Any) -> WalrusLog:
    """Open the log at ``url``.

    Parameters:
        url: ``file:///path`` or a plain path (a local :class:`~walrus_core.Walrus`), or a URL
            whose scheme an installed plugin serves (entry-point group ``walrus.remotes``).
        options: passed on unchanged: to :class:`~walrus_core.Walrus` for a local log (``key``,
            ``fsync``, ``consistency``, ...), to the remote's factory otherwise.

    Raises:
        BackendUnavailableError: no installed plugin serves the URL's scheme.
        InvalidConfigError: a ``file:`` URL naming another host, or carrying a query.
    """
    if isinstance(url, os.PathLike):
        return _local(os.fspath(url), options)
    if not isinstance(url, str):
        raise TypeError(f"url must be a str or os.PathLike, not {type(url).__name__}")
    match = _SCHEME.match(url)
    if match is None or _is_windows_drive(url):
        return _local(url, options)
    scheme = match.group(1).lower()
    if scheme == "file":
        return _local(_file_url_path(url), options)
    return _factory(scheme)(url, **options)


def _local(path: str, options: dict[str, Any]) -> WalrusLog:
    return Walrus(data_dir=path, **options)


def _is_windows_drive(url: str) -> bool:
    return sys.platform == "win32" and re.match(r"^[A-Za-z]:[\\/]", url) is not None


def _file_url_path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidConfigError(
            f"{url!r} names the host {parts.netloc!r}; a file: URL opens a local directory only"
        )
    if parts.query or parts.fragment:
        raise InvalidConfigError(f"{url!r}: a file: URL takes no query or fragment")
    if not parts.path:
        raise InvalidConfigError(f"{url!r} names no directory")
    return urllib.request.url2pathname(parts.path)


def _factory(scheme: str) -> Callable[..., WalrusLog]:
    for ep in importlib.metadata.entry_points(group=REMOTE_ENTRY_POINT_GROUP):
        if ep.name.lower() != scheme:
            continue
        try:
            factory = ep.load()
        except Exception as exc:
            raise BackendUnavailableError(
                f"the remote log for {scheme}: URLs ({ep.value}) cannot be imported: {exc}"
            ) from exc
        if not callable(factory):
            raise BackendUnavailableError(
                f"the remote log for {scheme}: URLs ({ep.value}) is not callable"
            )
        return _checked(scheme, factory)
    known = remote_install_instructions(scheme)
    hint = (
        f"{scheme}: URLs are served by the project's remote log: {known}"
        if known is not None
        else f"install the one that serves {scheme}:"
    )
    raise BackendUnavailableError(
        f"no installed plugin serves {scheme}: URLs; connect() opens here: "
        f"{', '.join(installed_schemes())}. A remote log is a plugin published under the"
        f" entry-point group {REMOTE_ENTRY_POINT_GROUP!r}; {hint}"
    )


def _checked(scheme: str, factory: Callable[..., Any]) -> Callable[..., WalrusLog]:
    def open_remote(url: str, **options: Any) -> WalrusLog:
        log = factory(url, **options)
        if not isinstance(log, WalrusLog):
            close = getattr(log, "close", None)
            if callable(close):
                close()
            raise TypeError(
                f"the remote log for {scheme}: URLs returned a {type(log).__name__}, which"
                " does not implement walrus_core.WalrusLog"
            )
        return log

    return open_remote
