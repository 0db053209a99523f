"""The emulator's sockets: Nagle is off on every accepted connection (TCP_NODELAY).

Without it a response whose body goes out in a second write waits for the client's delayed ACK:
every JSON answer arrived ~42 ms late (bench/standin.py prints the round trip)."""
from __future__ import annotations

import socket
import ssl

import httpx
import trustme

from devstack.emulator.server import start_in_thread
from devstack.emulator.state import Emulator, EmulatorConfig


def test_accepted_connections_have_tcp_nodelay(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    emu = Emulator(EmulatorConfig(port=0))
    handle = start_in_thread(emu, str(tmp_path / "server.pem"), str(tmp_path / "server.pem"))
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))) as client:
            assert client.get(f"{emu.base_url}/_devstack/faults").status_code == 200  # keep-alive: stays open
            connections = list(handle._server.server_state.connections)
            assert connections
            for protocol in connections:
                sock = protocol.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        handle.stop()
