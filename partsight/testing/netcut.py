"""A TCP link that can be cut and healed, standing between one client and its server (the bridge and Mosquitto).

`cut()` stops moving bytes both ways without closing anything, as an unplugged cable or a dead switch
does: the peers' sockets stay open, what they send waits in buffers, and only their own keepalives can tell.
Connections opened during the cut hang the same way. `heal()` lets everything flow again.
"""

from __future__ import annotations

import select
import socket
import threading
from contextlib import suppress

from partsight.testing.servers import free_port


class CuttableLink:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = free_port()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, self.port))
        self._thread = threading.Thread(target=self._accept, name="netcut-accept", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        with suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="netcut-link", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._flowing.wait()  # a connection opened during the cut hangs until it heals
        try:
            upstream = socket.create_connection((self.host, self.upstream_port), timeout=5)
        except OSError:
            client.close()  # the server is down: the client sees a refused connection, as it would directly
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets += [client, upstream]
        pair = {client: upstream, upstream: client}
        try:
            while not self._closed.is_set():
                self._flowing.wait()
                readable, _, _ = select.select(list(pair), [], [], 0.2)
                for source in readable:
                    if not self._flowing.is_set():
                        break  # cut while waiting: leave the bytes where they are
                    data = source.recv(65536)
                    if not data:
                        return
                    pair[source].sendall(data)
        except OSError:
            return
        finally:
            for sock in pair:
                with suppress(OSError):
                    sock.close()
