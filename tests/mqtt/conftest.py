from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.mqtt.broker import MOSQUITTO, Broker

if shutil.which(MOSQUITTO) is None and not Path(MOSQUITTO).exists():
    # .ci/run installs it; a developer machine without it says so instead of failing obscurely.
    pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)", allow_module_level=True)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    b = await Broker(tmp_path / "broker").start()
    yield b
    await b.stop()
