"""python -m devstack up|down|env

    up     start the stand-in (Azurite, registries, ACR emulator), write the env file
           (.devstack/devstack.env, or $DEVSTACK_STATE_DIR/devstack.env), print its path and
           content (the upstream-auth password masked), and run until Ctrl-C or SIGTERM; then stop
           everything. ``--profile fast|azure`` (or $DEVSTACK_PROFILE) picks the emulator's timing,
           ``--retry-after auto|none|SECONDS`` (or $DEVSTACK_IMPORT_RETRY_AFTER) the imports'
           Retry-After (devstack/emulator/profiles.py). ``--seed`` pushes the demo's images
           (devstack.oci.CATALOGUE) to the upstream registry and writes a sample manifest for them
           (.devstack/images.txt, or $DEVSTACK_STATE_DIR/images.txt), so a first ``sync`` against the
           stand-in has something to import.
    runner run queue-triggered functions of a FunctionApp as the Functions host would, in N
           processes (devstack/queue_runner.py; ``python -m devstack runner --help``).
    down   send SIGTERM to a running ``up`` and wait for it to finish.
    env    print the running stack's env file (KEY=VALUE); ``--export`` prints shell
           ``export KEY='VALUE'`` lines for ``eval "$(python -m devstack env --export)"``.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from devstack import queue_runner
from devstack.emulator.profiles import PROFILES
from devstack.oci import OciError
from devstack.stack import REPO_ROOT, Stack, pid_alive

log = logging.getLogger(__name__)


def state_dir() -> Path:
    return Path(os.environ.get("DEVSTACK_STATE_DIR") or REPO_ROOT / ".devstack")


def env_file() -> Path:
    return state_dir() / "devstack.env"


def pid_file() -> Path:
    return state_dir() / "up.pid"


def _running_pid() -> int | None:
    try:
        pid = int(pid_file().read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def cmd_up(args: argparse.Namespace) -> int:
    other = _running_pid()
    if other is not None:
        print(f"devstack: already up (pid {other}); see {env_file()}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("devstack: got signal %d, stopping", signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        state_dir().mkdir(parents=True, exist_ok=True)
        options = {"import_retry_after": args.retry_after} if args.retry_after else {}
        with Stack(env_file=env_file(), keep_workdir=args.keep, with_emulator=not args.no_emulator,
                   profile=args.profile, emulator_options=options) as stack:
            pid_file().write_text(f"{os.getpid()}\n")
            try:
                print(f"devstack: up in {stack.startup_seconds:.2f}s (data in {stack.workdir}; "
                      f"timing profile {stack.profile})")
                print(f"devstack: env file {stack.env_path}")
                sys.stdout.write(stack.env_text(mask_secrets=True))
                if args.seed:
                    try:
                        seed(stack)
                    except (OciError, OSError) as exc:
                        print(f"devstack: seeding the upstream failed: {exc}", file=sys.stderr)
                        return 1
                print("devstack: Ctrl-C or `python -m devstack down` stops it", flush=True)
                while not stop.wait(0.5):
                    dead = stack.exited_children()
                    if dead:
                        for name, (code, tail) in dead.items():
                            print(f"devstack: {name} exited ({code}):\n{tail}", file=sys.stderr)
                        return 1
            finally:
                try:
                    pid_file().unlink()
                except FileNotFoundError:
                    pass
        print("devstack: stopped", flush=True)
        return 0
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def manifest_file() -> Path:
    return state_dir() / "images.txt"


def seed(stack: Stack) -> dict[str, str]:
    """Push the demo's images to the upstream registry and write the sample manifest of them."""
    from devstack.demo import sample_manifest
    from devstack.oci import seed_upstream

    seeded = seed_upstream(stack)
    manifest_file().write_text(sample_manifest(seeded))
    print(f"devstack: seeded {len(seeded)} images into the upstream registry {stack.upstream_host} "
          "(docker.io, quay.io, registry.k8s.io, mcr.microsoft.com and ghcr.io are mirrored to it)")
    for ref, digest in sorted(seeded.items()):
        print(f"  {ref}  {digest}")
    print(f"devstack: sample manifest {manifest_file()}; try\n"
          f"  .venv/bin/python -m shared --env-file {stack.env_path} sync {manifest_file()}", flush=True)
    return seeded


def cmd_down(args: argparse.Namespace) -> int:
    pid = _running_pid()
    if pid is None:
        print("devstack: not running", file=sys.stderr)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            print(f"devstack: pid {pid} still running after {args.timeout:.0f}s", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print("devstack: stopped")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    path = env_file()
    if _running_pid() is None or not path.exists():
        print(f"devstack: not running (no {path}); start it with `python -m devstack up`", file=sys.stderr)
        return 1
    text = path.read_text()
    if args.export:
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                print(f"export {key}={shlex.quote(value)}")
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description="local stand-in for Azure")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stand-in and run until Ctrl-C/SIGTERM")
    up.add_argument("--keep", action="store_true", help="keep the data folder after stopping")
    up.add_argument("--no-emulator", action="store_true", help="Azurite and the registries only")
    up.add_argument("--seed", action="store_true",
                    help="push the demo's images to the upstream and write a sample images.txt for them")
    up.add_argument("--profile", choices=sorted(PROFILES), default=os.environ.get("DEVSTACK_PROFILE") or "fast",
                    help="emulator timing: fast (tests) or azure (benchmarks); default $DEVSTACK_PROFILE or fast")
    up.add_argument("--retry-after", default=os.environ.get("DEVSTACK_IMPORT_RETRY_AFTER") or None,
                    help="Retry-After of import 202s: auto, none or seconds (default: the profile's)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop a running `up`")
    down.add_argument("--timeout", type=float, default=30.0)
    down.set_defaults(func=cmd_down)
    env = sub.add_parser("env", help="print the running stack's env file")
    env.add_argument("--export", action="store_true", help="shell export lines")
    env.set_defaults(func=cmd_env)
    runner = sub.add_parser("runner", help="run the app's queue triggers as the Functions host would")
    queue_runner.add_arguments(runner)
    runner.set_defaults(func=queue_runner.run_command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
