"""The exceptions pairbatch raises. Messages never contain API keys."""

from __future__ import annotations


class PairbatchError(Exception):
    """Base class for every error raised by pairbatch."""


class InputError(PairbatchError, ValueError):
    """Bad user input: a pairs table, a template, an argument. The message names the field."""


class RegistryError(PairbatchError, ValueError):
    """A jobs registry on disk that cannot be read; the message names the row and column."""


class ProviderError(PairbatchError):
    """A provider answered with an error that retrying will not fix.

    ``status`` is the HTTP status (``None`` for transport failures), ``message`` the
    provider's own error text and ``error_type`` its error code or type when it sent one.
    """

    def __init__(
        self,
        provider: str,
        status: int | None,
        message: str,
        *,
        error_type: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.provider = provider
        self.status = status
        self.message = message
        self.error_type = error_type
        self.retryable = retryable
        where = f"HTTP {status}" if status is not None else "transport error"
        kind = f" [{error_type}]" if error_type else ""
        super().__init__(f"{provider}: {where}{kind}: {message}")


class RetryExhaustedError(ProviderError):
    """A transient error that kept coming back after the configured number of tries."""

    def __init__(self, last: ProviderError, attempts: int) -> None:
        super().__init__(
            last.provider,
            last.status,
            f"{last.message} (gave up after {attempts} attempts)",
            error_type=last.error_type,
            retryable=True,
        )
        self.last = last
        self.attempts = attempts


class DownloadError(ProviderError):
    """A results download that ended short or did not match its declared size."""


class UnresolvedBatchError(PairbatchError):
    """A create's outcome is unknown and the batch it may have made cannot be told apart
    from others yet; sending the create again could pay twice, so the caller waits."""


class ProviderUnreachableError(PairbatchError):
    """A provider that has not answered once in this run (refused, DNS, TLS, timeout):
    every job of it would fail the same way, so the run stops with one line."""


def first_line(exc: BaseException) -> str:
    """An exception's message, its first line only (Polars appends advice about its own
    reader options, which a CLI user cannot set)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
