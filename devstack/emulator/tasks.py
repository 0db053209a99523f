"""Placeholder: ACR Tasks / runs / agent pools routes are being written (see devstack/emulator/app.py)."""


def install(emu):
    return []
