"""The exception hierarchy: everything Walrus raises on purpose derives from :class:`WalrusError`.

Errors about bad arguments also derive from :class:`ValueError`, so callers that already catch
``ValueError`` keep working; I/O failures keep the original ``OSError`` as ``__cause__``.
"""

from __future__ import annotations


class WalrusError(Exception):
    """Base class of every error the package raises on purpose."""


class WalrusValueError(WalrusError, ValueError):
    """An argument or configuration value is out of range or malformed."""


class InvalidTopicError(WalrusValueError):
    """A topic (or consumer) name is empty, too long, contains NUL or is not encodable."""


class InvalidConfigError(WalrusValueError):
    """A configuration value (geometry, schedule, limits, directory) makes no sense."""


class UnsupportedFormatError(InvalidConfigError):
    """The directory was written in an on-disk format version this code does not read."""


class EntryTooLargeError(WalrusValueError):
    """A single payload is larger than the largest entry the log accepts (1 GiB by default)."""


class BatchTooLargeError(WalrusValueError):
    """A batch has more entries or more bytes than the configured batch limits."""


class OffsetOutOfRangeError(WalrusValueError):
    """An entry offset lies outside the entries a topic holds."""


class UnknownTopicError(WalrusValueError, KeyError):
    """The topic has no entries and never had any (or was deleted)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WalrusClosedError(WalrusError):
    """The instance was closed; no further calls are accepted."""


class ForkedInstanceError(WalrusClosedError):
    """The instance was inherited through ``fork()``: it belongs to the parent process.

    The child's copy is closed for the child (without touching the parent's files or its
    directory lock); the child opens a new :class:`~walrus_core.Walrus` once the parent closed
    its own.
    """


class DirectoryLockedError(WalrusError):
    """Another open instance, in this process or another, holds the directory.

    ``holder_pid`` is the pid of the process holding it, when the lock file names a live one.
    """

    def __init__(self, message: str, holder_pid: int | None = None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


class BackendUnavailableError(WalrusError):
    """The requested storage backend is not installed or cannot run here."""


class CorruptionError(WalrusError):
    """Stored bytes failed validation; wrong bytes are never returned.

    ``topic``, ``offset`` and ``path`` say where the damaged entry is, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        offset: int | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.offset = offset
        self.path = path


class StorageError(WalrusError):
    """A storage operation failed (ENOSPC, EIO, ...); the OSError is the ``__cause__``.

    The log stays consistent: the failed append or batch is absent and nothing earlier is lost.
    """

    @property
    def errno(self) -> int | None:
        """The ``errno`` of the underlying ``OSError``, if there is one."""
        cause = self.__cause__
        return cause.errno if isinstance(cause, OSError) else None


class RemoteUnavailableError(StorageError):
    """A remote log's servers cannot be reached, or did not answer in time.

    Nothing was appended by the call that raised it (an append whose outcome is not known
    raises :class:`AppendOutcomeUnknownError` instead).
    """


class AppendOutcomeUnknownError(StorageError):
    """An append to a remote log may or may not have been stored: every retry timed out.

    The servers can commit a request whose answer was lost, so a timeout does not mean
    "not written". ``expected_offset`` is the offset the entry (or the batch's first entry)
    has if it was stored, ``count`` how many entries the call appended, and ``topic`` where:
    reading ``topic`` at ``expected_offset`` later tells which it was. Appending again blindly
    could store the entries twice.
    """

    def __init__(self, message: str, *, topic: str, expected_offset: int, count: int) -> None:
        super().__init__(message)
        self.topic = topic
        self.expected_offset = expected_offset
        self.count = count
