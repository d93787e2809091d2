"""huggingface_hub's and the network's exceptions as llamahost's."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..errors import DownloadError, GatedModelError, ModelNotFoundError


@contextmanager
def hub_errors(ref: str) -> Iterator[None]:
    """huggingface_hub's and the network's exceptions as llamahost's, naming the reference."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError:
        raise GatedModelError(f"{ref}: the repository is gated: accept its conditions on the Hub, then set HF_TOKEN "
                              "to a token of that account") from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ModelNotFoundError(ref, "no such repository on the Hugging Face Hub (a private one needs HF_TOKEN)") \
            from None
    except OfflineModeIsEnabled:
        raise DownloadError(f"{ref}: HF_HUB_OFFLINE is set, so the Hub is not reached") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, httpx2.TransportError) as exc:
        raise DownloadError(f"{ref}: {exc}") from None
