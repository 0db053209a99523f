"""``trust publish``: push the verification material of a trust policy into the ACR.

    python -m shared trust publish trust-policy.yaml [--trusted-root NAME=PATH ...]

Validates the policy, lays out its material (``shared.core.trustmaterial``: the Sigstore public-good
trusted root and each operator root the policy names, their Fulcio / Rekor / CT log material as PEM,
the cosign keys, the notation trust stores, the policy and ``trust.json``) and pushes it to
TRUST_REPOSITORY (default ``airlock/trust``) under ``trust-<16 hex of its digest>`` and ``latest``
(``shared.handlers.publish``). Prints the reference and the files (``--json``: the whole result).
A scope's ``trusted_root: NAME`` needs ``--trusted-root NAME=PATH`` (a ``trusted_root.json``).
Exit codes: 0 published, 1 the policy is invalid or the push was refused (the app needs AcrPush), 2 usage.

Registration: the ``trust`` group (``cli/trust.py``) adds this subcommand (``add_publish``) and hands
``trust publish`` to ``run``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TextIO

from ..errors import ConfigError
from .args import EXIT_OK, os_reason
from .output import write_json


def add_publish(trust_sub) -> None:
    """The ``publish`` subcommand, on the ``trust`` group's subparsers."""
    publish = trust_sub.add_parser("publish", help="push the trust policy's verification material into the ACR "
                                                   "(airlock/trust), for verifiers inside the cluster")
    publish.add_argument("file", help="the trust policy (YAML)")
    publish.add_argument("--trusted-root", action="append", default=[], metavar="NAME=PATH",
                         help="a Sigstore trusted_root.json a scope names as trusted_root (repeatable)")


def _read(path: Path, limit: int) -> bytes:
    try:
        if path.stat().st_size > limit:
            raise ConfigError(f"{path}: over {limit} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {os_reason(exc)}") from None


def _roots(values: list[str]) -> dict[str, bytes]:
    from ..core.trustmaterial import MAX_ROOT_BYTES

    roots: dict[str, bytes] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--trusted-root takes NAME=PATH, got {value!r}")
        if name in roots:
            raise ConfigError(f"--trusted-root {name} is given twice")
        roots[name] = _read(Path(path), MAX_ROOT_BYTES)
    return roots


def run(args, env, out: TextIO, err: TextIO) -> int:
    from ..handlers.publish import publish_trust_material
    from ..services import Services

    from ..core.trust.policy import MAX_BYTES

    path = Path(args.file)
    data = _read(path, MAX_BYTES)
    result = publish_trust_material(Services.from_env(env), data, name=path.name,
                                    trusted_roots=_roots(args.trusted_root))
    if args.json:
        write_json(out, result)
        return EXIT_OK
    out.write(f"published {result['reference']} ({', '.join(result['tags'])})\n")
    for file in result["files"]:
        out.write(f"  {file['name']}  {file['size']} bytes  {file['digest'][:19]}\n")
    return EXIT_OK
