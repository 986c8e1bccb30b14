"""scripts/stack_processes.py: the helpers every end-to-end test starts its programs with."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import pytest
import stack_processes  # type: ignore[import-not-found]


class _SameFirstPort:
    """A socket whose kernel hands out one port twice before another, as Linux may."""

    ports = iter(())

    def __init__(self, *args: Any) -> None:
        self.port = next(self.ports)

    def __enter__(self) -> _SameFirstPort:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        return None

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_free_port_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_processes, "_HANDED_OUT", set())
    monkeypatch.setattr(_SameFirstPort, "ports", iter([40001, 40001, 40002]))
    fake_socket_module = SimpleNamespace(
        socket=_SameFirstPort, AF_INET=socket.AF_INET, SOCK_STREAM=socket.SOCK_STREAM
    )
    monkeypatch.setattr(stack_processes, "socket", fake_socket_module)
    assert [stack_processes.free_port(), stack_processes.free_port()] == [40001, 40002]


def test_free_port_gives_a_port_nothing_listens_on() -> None:
    port = stack_processes.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
