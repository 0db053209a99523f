"""``python -m shared discover``: the images Kubernetes YAML pulls, and a pull-request check.

    python -m shared discover FILE... [--json] [--registry-host HOST]
    python -m shared discover FILE... --check images.txt [--json | --format FORMAT] [--registry-host HOST]

FILE is YAML as ``helm template`` or ``kustomize build`` print it (``-`` reads stdin). Without
``--check`` it prints ``images.txt`` lines (default destinations) for the images it finds;
images already on the private registry are left out when its host is known. With ``--check``
it reports every use of an image the manifest does not mirror, and every reference that does
not point at the private registry (``--registry-host``, else ``ACR_LOGIN_SERVER``, else the
login server read from ARM when the registry is named: ``--registry NAME`` and the Azure CLI's login are
enough, as for ``plan``), as ``file:line:column: ...``; exit 1 when there is any finding or a file cannot
be read as YAML. Without a host the check still runs:
the ``not-private`` check is skipped (said on stderr and in ``skipped``), and a use passes when an
entry or tag policy imports it or writes its repository and tag. Uses a tag policy admits are listed
on stderr (``policy_uses``). ``--format github|azure|sarif`` prints the findings (and unreadable files)
as pipeline annotations or a SARIF log, with the finding's code as the rule.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from ..errors import ConfigError, ManifestError
from .args import EXIT_FAILED, EXIT_OK
from .output import ANNOTATION_FORMATS, CHECK_FORMATS, Annotation, check_format, write_annotations, write_json

MAX_FILE_BYTES = 64 * 1024 * 1024


def add_parsers(sub) -> None:
    p = sub.add_parser("discover", help="list the images Kubernetes YAML uses; --check them against images.txt")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="Kubernetes YAML (helm template / kustomize build); - for stdin")
    p.add_argument("--json", action="store_true")
    p.add_argument("--check", metavar="IMAGES_TXT", help="report images the manifest does not mirror")
    p.add_argument("--registry-host", help="the private registry's host (default: ACR_LOGIN_SERVER)")
    p.add_argument("--format", choices=CHECK_FORMATS,
                   help="with --check: text (default), json (as --json), github or azure (pipeline annotations), "
                        "sarif")


def _read(path: str) -> tuple[str, bytes]:
    if path == "-":
        return "stdin", sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    with open(path, "rb") as handle:
        return path, handle.read(MAX_FILE_BYTES + 1)


def _private_host(args, settings, env, *, ask_arm: bool) -> str:
    """``--registry-host``, else ``ACR_LOGIN_SERVER``, else (``ask_arm``, and the registry is named)
    the login server read from ARM; "" when there is none (the check then skips ``not-private``)."""
    if args.registry_host:
        return args.registry_host.strip().lower()
    if settings.login_server:
        return settings.login_server.lower()
    if not ask_arm or not settings.registry_name:
        return ""  # no registry named: the check runs without the host (not-private skipped)
    from ..services import Services

    # located from the name (the Azure CLI's subscription, the resource group through ARM), as plan does
    return Services.for_cli(env).settings.login_server.lower()


def run(args, env, out: TextIO, err: TextIO) -> int:
    from ..config import Settings
    from ..core import discover as core
    from ..handlers.sync import check_manifest

    fmt = check_format(args)
    if fmt not in ("text", "json") and not args.check:
        raise ConfigError(f"--format {fmt} is for --check (the findings of a check as annotations)")
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
    host = _private_host(args, settings, env, ask_arm=manifest is not None)
    found = core.discover(files)
    report = core.check_report(found.uses, manifest, host or None) if manifest is not None else None
    findings = report.findings if report is not None else []
    listed = core.images(found.uses, host or None)
    ok = found.ok and not findings

    if report is not None and fmt != "json" and not args.quiet:
        for skipped in report.skipped:
            print(f"note: {skipped}", file=err)
        for use in report.policy_uses:
            print(f"note: {use}", file=err)
    if fmt == "json":
        document = {
            "registry_host": host or None,
            "images": [{**i, "uses": [u.to_dict() for u in i["uses"]]} for i in listed],
            "problems": [{"file": f, **p.to_dict()} for f, p in found.problems],
        }
        if report is not None:
            document["manifest"] = args.check
            document.update(report.to_dict())
        document["ok"] = ok
        write_json(out, document)
        return EXIT_OK if ok else EXIT_FAILED
    if fmt in ANNOTATION_FORMATS:
        from ..http.openapi import app_version

        marks = [Annotation(None if name == "stdin" else name, p.line, None, "unreadable-yaml", p.message)
                 for name, p in found.problems]
        for f in findings:
            u = f.use
            text = f"{u.owner} {u.field[:-1] if u.field.endswith('s') else u.field} {u.container!r}: {f.message}"
            marks.append(Annotation(None if u.file == "stdin" else u.file, u.line, u.column, f.code,
                                    text + (f" ({f.suggestion})" if f.suggestion else "")))
        write_annotations(out, marks, fmt, version=app_version())
        if fmt != "sarif":
            out.write(_summary(findings, found, listed, args.check, host) + "\n")
        return EXIT_OK if ok else EXIT_FAILED
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
        out.write(_summary(findings, found, listed, args.check, host) + "\n")
    return EXIT_OK if ok else EXIT_FAILED


def _summary(findings, found, listed, manifest: str, host: str) -> str:
    against = f"{manifest} and {host}" if host else f"{manifest}; no registry host (not-private not checked)"
    return (f"{len(findings)} finding(s) in {len(found.uses)} image use(s) of {len(listed)} image(s); "
            f"checked against {against}")
