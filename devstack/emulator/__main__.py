"""Standalone emulator: python -m devstack.emulator --config cfg.json --certfile cert.pem --keyfile key.pem

The config file holds EmulatorConfig fields as a JSON object. Once serving, one JSON line
{"base_url": ..., "login_server": ...} is printed on stdout; SIGINT / SIGTERM stop the server.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import threading

from .server import start_in_thread
from .state import Emulator, EmulatorConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON file with EmulatorConfig fields")
    parser.add_argument("--certfile", required=True, help="PEM server certificate (chain)")
    parser.add_argument("--keyfile", required=True, help="PEM private key of the certificate")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with open(args.config, encoding="utf-8") as handle:
        emu = Emulator(EmulatorConfig.from_dict(json.load(handle)))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = start_in_thread(emu, args.certfile, args.keyfile)
    print(json.dumps({"base_url": emu.base_url, "login_server": emu.login_server}), flush=True)
    try:
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
