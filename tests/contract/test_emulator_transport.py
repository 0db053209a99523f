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


def test_reads_the_backing_registry_answered_500_are_retried():
    """distribution answers 500 "invalid checksum digest format" to a read racing a rewrite of a
    link file (seen as read-back 500s in `python -m bench sync`); the emulator reads again."""
    import asyncio

    from devstack.emulator.dataplane import READ_ATTEMPTS, BackingRegistry

    calls: list[str] = []
    answers = {"GET": [500, 500, 200], "HEAD": [500] * 10, "PUT": [500, 201]}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(answers[request.method].pop(0), json={"errors": []})

    async def run() -> list[int]:
        backing = BackingRegistry("http://127.0.0.1:9", transport=httpx.MockTransport(handler))
        try:
            statuses = [(await backing.client.get("/v2/a/manifests/v1")).status_code]
            statuses.append((await backing.client.head("/v2/a/manifests/v1")).status_code)
            statuses.append((await backing.client.put("/v2/a/manifests/v1", content=b"{}")).status_code)
            return statuses
        finally:
            await backing.aclose()

    assert asyncio.run(run()) == [200, 500, 500]
    assert calls == ["GET"] * 3 + ["HEAD"] * READ_ATTEMPTS + ["PUT"]  # writes are never repeated


def test_link_files_read_empty_while_rewritten_are_read_again(tmp_path):
    from devstack.emulator.dataplane import _read_link

    link = tmp_path / "link"
    assert _read_link(link) is None
    link.write_text("")
    assert _read_link(link) is None  # stays empty: treated as gone
    link.write_text("sha256:" + "a" * 64)
    assert _read_link(link) == "sha256:" + "a" * 64
