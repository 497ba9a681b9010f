"""Helpers for the connector tests: a fast retry policy and a small client for the emulators' control plane."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from connectors.http import RetryPolicy

# Fast enough for tests, patient enough to honour a Retry-After of 1 s.
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=5.0, jitter=False)


class Control:
    """The `/_sandbox/*` control plane of a served emulator."""

    def __init__(self, base_url: str):
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def fault(self, kind: str, *, path: str = "", times: int = 1, **extra: Any) -> None:
        answer = self.http.post("/_sandbox/faults", json={"kind": kind, "path": path, "times": times, **extra})
        answer.raise_for_status()

    def clear_faults(self) -> None:
        self.http.delete("/_sandbox/faults").raise_for_status()

    def rate_limits(self, **limits: Any) -> None:
        self.http.put("/_sandbox/rate-limits", json=limits).raise_for_status()

    def expire_tokens(self) -> None:
        self.http.post("/_sandbox/expire-tokens").raise_for_status()

    def requests(self, path_contains: str = "") -> list[dict]:
        return [r for r in self.http.get("/_sandbox/requests").json() if path_contains in r["path"]]

    def writes(self) -> list[dict]:
        return self.http.get("/_sandbox/writes").json()

    def clear_log(self) -> None:
        self.http.delete("/_sandbox/log").raise_for_status()

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def fast_retry() -> RetryPolicy:
    return FAST_RETRY


@pytest.fixture
def control_for() -> Iterator[Callable[[str], Control]]:
    """control_for(emulator_url) -> Control, closed after the test."""
    made: list[Control] = []

    def make(base_url: str) -> Control:
        made.append(Control(base_url))
        return made[-1]

    yield make
    for control in made:
        control.close()
