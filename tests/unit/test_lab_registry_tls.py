"""The lab registry's certificates pass a strict verifier: Python 3.13 (Debian 13) sets
VERIFY_X509_STRICT in its default context, which refuses certificates without key identifiers.
Checked with a real TLS handshake on loopback, the strict flag set whatever this Python's default."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from swarmctl_lab.registry import make_tls


def test_the_lab_registry_certificate_verifies_strictly(tmp_path: Path) -> None:
    ca_file = make_tls(tmp_path, "127.0.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (OSError, ssl.SSLError) as e:
            errors.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.recv(2) == b"ok"
    thread.join(timeout=5)
    listener.close()
    assert not errors
