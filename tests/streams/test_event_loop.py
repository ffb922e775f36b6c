"""The worker's event loop choice (SIDSTREAM_EVENT_LOOP)."""
import asyncio
import sys

import pytest
import uvloop
from pydantic import ValidationError

from streams.settings import WorkerSettings
from streams.worker import use_event_loop


@pytest.fixture(autouse=True)
def restore_policy():
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


def test_uvloop_is_the_default_and_runs_coroutines(monkeypatch):
    monkeypatch.delenv("SIDSTREAM_EVENT_LOOP", raising=False)
    assert WorkerSettings().event_loop == "uvloop"
    use_event_loop("uvloop")
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, result=42)) == 42
    finally:
        loop.close()


def test_asyncio_selects_the_standard_library_loop():
    use_event_loop("uvloop")
    use_event_loop("asyncio")
    loop = asyncio.new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_an_unknown_loop_is_refused_by_settings_and_by_the_switch(monkeypatch):
    monkeypatch.setenv("SIDSTREAM_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError, match="event_loop"):
        WorkerSettings()
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        use_event_loop("trio")


def test_a_missing_uvloop_names_the_fallback(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    with pytest.raises(ValueError, match="SIDSTREAM_EVENT_LOOP=asyncio"):
        use_event_loop("uvloop")
