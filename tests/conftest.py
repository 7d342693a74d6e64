from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pairbatch.testing import ProviderEmulator


@pytest.fixture
async def emulator() -> AsyncIterator[ProviderEmulator]:
    """A started emulator with default settings (no faults, ~1 s batches)."""
    async with ProviderEmulator() as emu:
        yield emu
