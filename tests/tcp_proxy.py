"""A TCP forwarder to the test server whose link can be cut, restored or frozen.

Real sockets and threads: ``cut()`` closes every forwarded connection and
refuses new ones (a server restart or a network outage, as a client sees
it); ``restore()`` lets connections through again. ``freeze()`` makes the open
connections swallow whatever either side sends -- the kernel still
acknowledges it, nothing answers: a hung server, or a network that lost its
route. Connections accepted after a freeze forward normally.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from sqlalchemy.engine import URL


class GateProxy:
    def __init__(self, server_url: URL) -> None:
        host = server_url.host or server_url.query.get("host")
        assert isinstance(host, str)
        port = server_url.port or 5432
        if host.startswith("/"):
            self._upstream: tuple[int, Any] = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
        else:
            self._upstream = (socket.AF_INET, (host, port))
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._frozen: list[threading.Event] = []
        self._threads: list[threading.Thread] = []
        self.swallowed = 0  # bytes sent into frozen connections
        self._spawn(self._accept)

    def url_for(self, url: URL) -> URL:
        """``url`` routed through this proxy."""
        return url.difference_update_query(["host"]).set(host="127.0.0.1", port=self.port)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name="test-proxy", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._open.is_set():
                client.close()  # refused while cut
                continue
            client.settimeout(None)
            upstream = socket.socket(self._upstream[0], socket.SOCK_STREAM)
            upstream.connect(self._upstream[1])
            frozen = threading.Event()
            with self._lock:
                self._sockets += [client, upstream]
                self._frozen.append(frozen)
            self._spawn(self._pump, client, upstream, frozen)
            self._spawn(self._pump, upstream, client, frozen)

    def _pump(self, source: socket.socket, target: socket.socket, frozen: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if frozen.is_set():
                    with self._lock:
                        self.swallowed += len(data)
                else:
                    target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def freeze(self) -> None:
        with self._lock:
            for frozen in self._frozen:
                frozen.set()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut_connection(self, index: int) -> None:
        """Cut the ``index``-th connection accepted (0: the first) alone and
        refuse new ones until :meth:`restore`; the others stay up."""
        self._open.clear()
        with self._lock:
            pair = self._sockets[2 * index : 2 * index + 2]
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        for thread in self._threads:
            thread.join(5)
        self._server.close()
