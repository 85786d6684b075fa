"""The fault matrix's own parts: how a run is counted, and a link that really stops and restarts the bytes."""

from __future__ import annotations

import socket
import threading

import pytest

from partsight.testing.fault_matrix import tally
from partsight.testing.netcut import CuttableLink


def test_tally_counts_lost_duplicated_and_the_worst_first_answer() -> None:
    sent = {"a": 10.0, "b": 11.0, "c": 12.0, "d": 13.0}
    answers = [(10.5, "a"), (14.0, "b"), (14.2, "b"), (12.1, "c"), (99.0, "stranger"), (15.0, None)]
    outcome = tally("x", sent, answers, fault_s=2.5)
    assert (outcome.sent, outcome.answered, outcome.duplicated, outcome.lost) == (4, 3, 1, 1)
    assert outcome.worst_latency_s == pytest.approx(3.0)  # b: sent at 11, first answered at 14
    assert outcome.fault_s == 2.5


def test_tally_of_a_clean_run() -> None:
    outcome = tally("x", {"a": 1.0}, [(1.2, "a")], fault_s=0)
    assert (outcome.lost, outcome.duplicated, outcome.answered) == (0, 0, 1)


@pytest.fixture
def echo_server():  # type: ignore[no-untyped-def]
    server = socket.create_server(("127.0.0.1", 0))

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_a_cut_link_holds_bytes_without_closing_and_a_healed_one_delivers_them(echo_server) -> None:
    link = CuttableLink(echo_server)
    try:
        client = socket.create_connection(("127.0.0.1", link.port), timeout=5)
        client.sendall(b"before")
        assert client.recv(100) == b"before"
        link.cut()
        client.sendall(b"during")
        client.settimeout(1.0)
        with pytest.raises(TimeoutError):
            client.recv(100)  # nothing comes back, and nothing says the connection is gone
        link.heal()
        client.settimeout(5)
        assert client.recv(100) == b"during"
        client.close()
    finally:
        link.close()


def test_a_connection_opened_during_the_cut_waits_for_the_heal(echo_server) -> None:
    link = CuttableLink(echo_server)
    try:
        link.cut()
        client = socket.create_connection(("127.0.0.1", link.port), timeout=5)  # the kernel accepts it
        client.sendall(b"hello")
        client.settimeout(1.0)
        with pytest.raises(TimeoutError):
            client.recv(100)
        link.heal()
        client.settimeout(5)
        assert client.recv(100) == b"hello"
        client.close()
    finally:
        link.close()
