"""pairbatch: comparative-judgement pairs through the LLM providers' batch APIs.

Submit a pairs table as provider batches, resume polling them concurrently under rate
limits, and collect the parsed verdicts as Polars frames; a crash-safe registry on disk
lets any run pick up where it stopped.
"""

from pairbatch import sync
from pairbatch.errors import (
    DownloadError,
    InputError,
    PairbatchError,
    ProviderError,
    ProviderUnreachableError,
    RegistryError,
    RetryExhaustedError,
)
from pairbatch.events import Event, EventKind
from pairbatch.integrity import DamagedFileError
from pairbatch.lock import RunLockedError
from pairbatch.models import BatchState, BatchStatus, Job, JobStatus, Provider
from pairbatch.outcomes import JobOutcome
from pairbatch.prompts import DEFAULT_TEMPLATE, build_prompt, trait_description
from pairbatch.registry import read_registry
from pairbatch.resume import ResumeResult, iter_completed, resume_multi_batches
from pairbatch.submit import SubmitResult, submit_pairs_multi_batch

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TEMPLATE",
    "BatchState",
    "BatchStatus",
    "DamagedFileError",
    "DownloadError",
    "Event",
    "EventKind",
    "InputError",
    "Job",
    "JobOutcome",
    "JobStatus",
    "PairbatchError",
    "Provider",
    "ProviderError",
    "ProviderUnreachableError",
    "RegistryError",
    "ResumeResult",
    "RetryExhaustedError",
    "RunLockedError",
    "SubmitResult",
    "__version__",
    "build_prompt",
    "iter_completed",
    "read_registry",
    "resume_multi_batches",
    "submit_pairs_multi_batch",
    "sync",
    "trait_description",
]
