"""``python -m shared discover``: the images Kubernetes YAML pulls, and a pull-request check.

    python -m shared discover FILE... [--json] [--registry-host HOST]
    python -m shared discover FILE... --check images.txt [--json] [--registry-host HOST]

FILE is YAML as ``helm template`` or ``kustomize build`` print it (``-`` reads stdin). Without
``--check`` it prints ``images.txt`` lines (default destinations) for the images it finds;
images already on the private registry are left out when its host is known. With ``--check``
it reports every use of an image the manifest does not mirror, and every reference that does
not point at the private registry (``--registry-host``, else ``ACR_LOGIN_SERVER``, else the
login server read from ARM: ``--registry NAME`` and the Azure CLI's login are enough, as for ``plan``),
as ``file:line:column: ...``; exit 1 when there is any finding or a file cannot be read as YAML.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from ..errors import ConfigError, ManifestError
from .args import EXIT_FAILED, EXIT_OK
from .output import write_json

MAX_FILE_BYTES = 64 * 1024 * 1024


def add_parsers(sub) -> None:
    p = sub.add_parser("discover", help="list the images Kubernetes YAML uses; --check them against images.txt")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="Kubernetes YAML (helm template / kustomize build); - for stdin")
    p.add_argument("--json", action="store_true")
    p.add_argument("--check", metavar="IMAGES_TXT", help="report images the manifest does not mirror")
    p.add_argument("--registry-host", help="the private registry's host (default: ACR_LOGIN_SERVER)")


def _read(path: str) -> tuple[str, bytes]:
    if path == "-":
        return "stdin", sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    with open(path, "rb") as handle:
        return path, handle.read(MAX_FILE_BYTES + 1)


def _private_host(args, env, settings, required: bool) -> str:
    if args.registry_host:
        return args.registry_host.strip().lower()
    if settings.login_server:
        return settings.login_server.lower()
    if not required:
        return ""
    if not settings.registry_name:
        raise ConfigError("discover --check needs the private registry's host: pass --registry-host HOST, set "
                          "ACR_LOGIN_SERVER, or name the registry (--registry NAME) to read it from ARM")
    from ..services import Services

    return Services.for_cli(env).settings.login_server.lower()  # located from the name, as plan does


def run(args, env, out: TextIO, err: TextIO) -> int:
    from ..config import Settings
    from ..core import discover as core
    from ..handlers.sync import check_manifest

    settings = Settings.from_env(env, offline=True)
    files = []
    for path in args.files:
        name, data = _read(path)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(f"{name}: larger than {MAX_FILE_BYTES} bytes")
        files.append((name, data))
    manifest = None
    if args.check:
        manifest = check_manifest(Path(args.check).read_bytes(), settings)
        if not manifest.ok:
            raise ManifestError(f"{args.check} is not valid; fix it first ({manifest.error_count} error(s))",
                                list(manifest.errors))
    host = _private_host(args, env, settings, required=manifest is not None)
    found = core.discover(files)
    findings = core.check(found.uses, manifest, host) if manifest is not None else []
    listed = core.images(found.uses, host or None)

    if args.json:
        document = {
            "registry_host": host or None,
            "images": [{**i, "uses": [u.to_dict() for u in i["uses"]]} for i in listed],
            "problems": [{"file": f, **p.to_dict()} for f, p in found.problems],
        }
        if manifest is not None:
            document["manifest"] = args.check
            document["findings"] = [f.to_dict() for f in findings]
        document["ok"] = found.ok and not findings
        write_json(out, document)
    else:
        for name, problem in found.problems:
            print(f"{name}:{problem.line}: {problem.message}" if problem.line else f"{name}: {problem.message}",
                  file=err)
        if manifest is None:
            for use in found.uses:
                if use.error:
                    print(f"{use.where}: {use.error} ({use.image or 'no image'}); not listed", file=err)
            for line in core.manifest_lines(found.uses, host or None):
                out.write(line + "\n")
            private = sum(1 for i in listed if i["manifest_line"] is None and i["reference"])
            if private:
                out.write(f"# {private} image(s) already on {host} not listed\n")
        else:
            for finding in findings:
                out.write(f"{finding}\n")
            uses = len(found.uses)
            out.write(f"{len(findings)} finding(s) in {uses} image use(s) of {len(listed)} image(s); "
                      f"checked against {args.check} and {host}\n")
    return EXIT_OK if found.ok and not findings else EXIT_FAILED
