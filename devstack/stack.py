"""The local stand-in for Azure: Azurite, three registries and the ACR emulator, on 127.0.0.1.

    with Stack() as stack:
        stack.env            # what a client needs (see ENV KEYS below); also written to stack.env_path
        stack.apply_env(monkeypatch)   # or os.environ

Everything binds to 127.0.0.1 on free ports and keeps its data in a temporary folder
(``stack.workdir``) that is removed on stop. Child processes run in their own process groups;
``stop()`` (also run on an exception during ``start()`` and at interpreter exit) terminates each
group, waits for it and kills what is left.

Pieces
- Azurite (blob, queue, table) from node_modules/.bin/azurite; ``stack.connection_string``.
- A local CA and a server certificate for 127.0.0.1/localhost made with trustme:
  ``stack.ca_pem``, ``stack.server_cert``, ``stack.server_key``, ``stack.certs_dir`` (ca.crt, for
  skopeo's --cert-dir).
- "upstream": docker-registry over TLS, standing in for docker.io, quay.io, registry.k8s.io,
  mcr.microsoft.com and ghcr.io (``stack.upstream_host`` = "127.0.0.1:PORT").
- "upstream-auth": docker-registry over TLS with ``auth: token``, a private source registry
  (``stack.upstream_auth_host``). Its realm is the emulator's /_devstack/upstream-token (service
  ``stack.upstream_auth_service``, issuer ``stack.upstream_auth_issuer``), which signs tokens with
  a per-stack key whose self-signed certificate is the registry's rootcertbundle. The user and
  password (``stack.upstream_auth_user``, ``stack.upstream_auth_password``; ``upstream_auth_creds``
  is "user:password" for skopeo) are random per stack and get the requested actions on every
  repository; anonymous clients may pull repositories under ``public/`` only. Without the emulator
  the registry runs but no token can be had.
- "backing": docker-registry over plain HTTP, the emulated ACR's store (``stack.backing_url``);
  its notifications go to the emulator's /_devstack/registry-notifications.
- The ACR emulator (devstack.emulator) over TLS in a thread of this process (``stack.emulator``,
  ``stack.arm_endpoint``).
- On demand, ``stack.source_acr()``: a second emulated ACR of the same tenant (its own backing
  registry and emulator: ARM and data plane), which accepts the stack's managed identity and which
  the first imports from by resource id (``importImage`` ``source.resourceId``). Started on first use
  only, so stacks that do not need it do not pay for it.

ENV KEYS: AZURE_SUBSCRIPTION_ID, ACR_RESOURCE_GROUP, ACR_NAME, ARM_ENDPOINT, IDENTITY_ENDPOINT,
IDENTITY_HEADER, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, AzureWebJobsStorage, SOURCE_REGISTRY_MIRRORS,
DEVSTACK_UPSTREAM, DEVSTACK_UPSTREAM_AUTH, DEVSTACK_UPSTREAM_AUTH_USER, DEVSTACK_UPSTREAM_AUTH_PASSWORD,
DEVSTACK_BACKING, DEVSTACK_CERTS_DIR, NO_PROXY. The env file is written with mode 0600; the password
is never logged (``env_text(mask_secrets=True)`` hides it).
"""
from __future__ import annotations

import atexit
import errno
import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_RESOURCE_GROUP = "airlock-rg"
DEFAULT_REGISTRY = "airlockacr"
DEFAULT_LOCATION = "westeurope"
MIRRORED_REGISTRIES = ("docker.io", "quay.io", "registry.k8s.io", "mcr.microsoft.com", "ghcr.io")
NOTIFICATIONS_PATH = "/_devstack/registry-notifications"
UPSTREAM_TOKEN_PATH = "/_devstack/upstream-token"
UPSTREAM_AUTH_SERVICE = "upstream-auth"
UPSTREAM_AUTH_ISSUER = "airlock-devstack"
REGISTRY_GOGC = "400"

ENV_KEYS = (
    "AZURE_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME", "ARM_ENDPOINT", "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "AzureWebJobsStorage",
    "SOURCE_REGISTRY_MIRRORS", "DEVSTACK_UPSTREAM", "DEVSTACK_UPSTREAM_AUTH", "DEVSTACK_UPSTREAM_AUTH_USER",
    "DEVSTACK_UPSTREAM_AUTH_PASSWORD", "DEVSTACK_BACKING", "DEVSTACK_CERTS_DIR", "NO_PROXY",
)
SECRET_ENV_KEYS = ("DEVSTACK_UPSTREAM_AUTH_PASSWORD",)


SOURCE_ACR_NAME = "airlocksrc"
SOURCE_ACR_RESOURCE_GROUP = "airlock-src-rg"


class StackError(RuntimeError):
    """The stand-in could not be started (the message names the piece and its log tail)."""


@dataclass(frozen=True)
class SourceAcr:
    """A second emulated ACR (``Stack.source_acr()``)."""

    emulator: Any          # devstack.emulator.state.Emulator
    login_server: str      # host:port of its data plane (TLS, the stack's CA)
    registry_id: str       # its ARM resource id
    backing_host: str      # host:port of its backing registry (plain HTTP): push test content here


@dataclass
class _Child:
    name: str
    popen: subprocess.Popen
    log_path: Path
    log_file: Any

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (all held open at once while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def group_alive(pgid: int) -> bool:
    """True if any process of process group ``pgid`` is still there (zombies included)."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the child when the thread that spawned it dies (e.g. a killed test run)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


def _child_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Environment for children: ours minus proxy settings and docker-registry overrides."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith("REGISTRY_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


class Stack:
    """Azurite + upstream registries (TLS; one anonymous, one with token auth) + backing registry
    (HTTP) + ACR emulator, on 127.0.0.1.

    Arguments: ``workdir`` (default: a new temp folder, removed on stop unless ``keep_workdir``),
    ``env_file`` (default ``workdir/devstack.env``), ``with_emulator`` (False starts everything
    but the emulator), ``emulator_options`` (extra EmulatorConfig fields, e.g. import_latency),
    ``subscription_id`` (default the all-zero id), ``startup_timeout`` seconds, ``profile`` (the
    emulator's timing: "fast" for tests, "azure" for benchmarks; devstack/emulator/profiles.py;
    ``emulator_options`` override single values of it).
    """

    def __init__(self, workdir: Optional[os.PathLike | str] = None, *, env_file: Optional[os.PathLike | str] = None,
                 with_emulator: bool = True, emulator_options: Optional[dict[str, Any]] = None,
                 subscription_id: str = DEFAULT_SUBSCRIPTION, resource_group: str = DEFAULT_RESOURCE_GROUP,
                 registry_name: str = DEFAULT_REGISTRY, location: str = DEFAULT_LOCATION,
                 keep_workdir: bool = False, startup_timeout: float = 60.0, profile: str = "fast"):
        from devstack.emulator.profiles import profile_options

        self.profile = profile
        self._profile_options = profile_options(profile)  # ValueError for an unknown profile
        self._own_workdir = workdir is None
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._env_file_arg = Path(env_file) if env_file is not None else None
        self.with_emulator = with_emulator
        self.emulator_options = dict(emulator_options or {})
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.registry_name = registry_name
        self.location = location
        self.keep_workdir = keep_workdir
        self.startup_timeout = startup_timeout

        self.workdir: Optional[Path] = None
        self.env_path: Optional[Path] = None
        self.env: dict[str, str] = {}
        self.startup_seconds: Optional[float] = None
        self.ca_pem = self.server_cert = self.server_key = self.certs_dir = None
        self.identity_header: Optional[str] = None
        self.blob_port = self.queue_port = self.table_port = None
        self.upstream_port = self.upstream_auth_port = self.backing_port = self.emulator_port = None
        self.upstream_auth_service = UPSTREAM_AUTH_SERVICE
        self.upstream_auth_issuer = UPSTREAM_AUTH_ISSUER
        self.upstream_auth_user: Optional[str] = None
        self.upstream_auth_password: Optional[str] = None
        self.token_signer_key = self.token_signer_cert = None  # the cert is the registry's rootcertbundle
        self.connection_string: Optional[str] = None
        self.emulator = None  # devstack.emulator.state.Emulator
        self._emulator_handle = None
        self._children: list[_Child] = []
        self._source_acr: Optional[SourceAcr] = None
        self._source_handle = None
        self._source_lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._atexit_registered = False

    # ----------------------------------------------------------------- derived addresses

    @property
    def upstream_host(self) -> str:
        return f"127.0.0.1:{self.upstream_port}"

    @property
    def upstream_url(self) -> str:
        return f"https://{self.upstream_host}"

    @property
    def upstream_auth_host(self) -> str:
        return f"127.0.0.1:{self.upstream_auth_port}"

    @property
    def upstream_auth_url(self) -> str:
        return f"https://{self.upstream_auth_host}"

    @property
    def upstream_auth_creds(self) -> str:
        """``user:password`` of the authenticated upstream (skopeo's --creds form). A secret."""
        return f"{self.upstream_auth_user}:{self.upstream_auth_password}"

    @property
    def upstream_token_realm(self) -> str:
        """The token endpoint the authenticated upstream sends clients to (served by the emulator)."""
        return f"{self.arm_endpoint}{UPSTREAM_TOKEN_PATH}"

    @property
    def backing_host(self) -> str:
        return f"127.0.0.1:{self.backing_port}"

    @property
    def backing_url(self) -> str:
        return f"http://{self.backing_host}"

    @property
    def arm_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.emulator_port}"

    @property
    def login_server(self) -> str:
        """The emulated ACR's login server (host:port); the emulator decides, this is the default."""
        if self.emulator is not None and getattr(self.emulator, "login_server", None):
            return self.emulator.login_server
        return f"127.0.0.1:{self.emulator_port}"

    @property
    def pids(self) -> list[int]:
        """Process ids (= process group ids) of the child processes, in start order."""
        return [c.pid for c in self._children]

    @property
    def children(self) -> dict[str, int]:
        return {c.name: c.pid for c in self._children}

    # ----------------------------------------------------------------- life cycle

    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Stack":
        if self._started:
            raise StackError("this Stack was already started; make a new one")
        self._started = True
        t0 = time.monotonic()
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self._prepare_workdir()
            (self.blob_port, self.queue_port, self.table_port, self.upstream_port,
             self.upstream_auth_port, self.backing_port, self.emulator_port) = free_ports(7)
            self.identity_header = secrets.token_urlsafe(24)
            self.upstream_auth_user = f"airlock-{secrets.token_hex(4)}"
            self.upstream_auth_password = secrets.token_urlsafe(24)
            self.connection_string = (
                f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{AZURITE_ACCOUNT};"
                f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{AZURITE_ACCOUNT};"
                f"TableEndpoint=http://127.0.0.1:{self.table_port}/{AZURITE_ACCOUNT};")
            # Spawn the processes first, then wait for all of them: their start-ups overlap.
            # Azurite (node) is the slowest, so it goes first, before the certificates.
            self._spawn_azurite()
            self._make_certs()
            self._make_token_signer()
            self._spawn_registry("upstream", self.upstream_port, tls=True)
            self._spawn_registry("upstream-auth", self.upstream_auth_port, tls=True, token_auth=True)
            self._spawn_registry("backing", self.backing_port, tls=False,
                                 notify_url=f"https://127.0.0.1:{self.emulator_port}{NOTIFICATIONS_PATH}")
            deadline = time.monotonic() + self.startup_timeout
            if self.with_emulator:
                # In-process and quick; it uses storage lazily, so it need not wait for Azurite.
                self._start_emulator()
                self._wait_port("emulator", self.emulator_port, deadline, child=None)
            for port in (self.blob_port, self.queue_port, self.table_port):
                self._wait_port("azurite", port, deadline)
            self._wait_registry("upstream", deadline)
            self._wait_registry("upstream-auth", deadline)
            self._wait_registry("backing", deadline)
            self._write_env()
        except BaseException:
            log.error("start failed; stopping what was started")
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        log.info("up in %.2fs (workdir %s)", self.startup_seconds, self.workdir)
        return self

    def stop(self) -> None:
        """Stop everything (idempotent): the emulator, then each child's process group."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if self._source_handle is not None:
            try:
                self._source_handle.stop()
            except Exception:  # noqa: BLE001 - stopping must go on
                log.exception("stopping the source ACR emulator failed")
            self._source_handle = None
        if self._emulator_handle is not None:
            try:
                self._emulator_handle.stop()
            except Exception:  # noqa: BLE001 - stopping must go on
                log.exception("stopping the emulator failed")
            self._emulator_handle = None
        for child in reversed(self._children):
            self._terminate(child)
        if self.env_path is not None and self._env_file_arg is not None:
            # An env file outside the workdir points at things that are gone now.
            try:
                self.env_path.unlink()
            except FileNotFoundError:
                pass
        if self._own_workdir and self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("stopped")

    @property
    def running(self) -> bool:
        return self._started and not self._stopped

    def exited_children(self) -> dict[str, tuple[int, str]]:
        """Children that have exited although the stack is up: name -> (return code, log tail)."""
        return {c.name: (c.popen.returncode, c.log_tail()) for c in self._children
                if c.popen.poll() is not None}

    # ----------------------------------------------------------------- pieces

    def _prepare_workdir(self) -> None:
        if self._workdir_arg is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="airlock-devstack-"))
        else:
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)

    def _make_certs(self) -> None:
        import trustme

        d = self.workdir / "tls"
        d.mkdir(exist_ok=True)
        ca = trustme.CA(organization_name="acr-airlock devstack")
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_pem = d / "ca.pem"
        self.server_cert = d / "server.pem"
        self.server_key = d / "server.key"
        ca.cert_pem.write_to_path(str(self.ca_pem))
        server.private_key_pem.write_to_path(str(self.server_key))
        with open(self.server_cert, "wb") as fh:
            for blob in server.cert_chain_pems:
                fh.write(blob.bytes())
        os.chmod(self.server_key, 0o600)
        self.certs_dir = d / "certs"
        self.certs_dir.mkdir(exist_ok=True)
        shutil.copyfile(self.ca_pem, self.certs_dir / "ca.crt")

    def _make_token_signer(self) -> None:
        """An EC P-256 key and its self-signed certificate: the certificate is the token-auth
        registry's rootcertbundle, the key signs the emulator's upstream tokens (ES256)."""
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acr-airlock devstack"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "upstream token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        d = self.workdir / "tls"
        self.token_signer_key = d / "token-signer.key"
        self.token_signer_cert = d / "token-signer.pem"
        with open(os.open(self.token_signer_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        self.token_signer_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _spawn(self, name: str, args: list[str], env: Optional[dict[str, str]] = None) -> _Child:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_file = open(log_path, "ab")
        try:
            # PDEATHSIG fires when the spawning *thread* ends, so it is only set from the main thread.
            on_main = threading.current_thread() is threading.main_thread() and sys.platform == "linux"
            popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                     cwd=str(self.workdir), env=_child_env(env), start_new_session=True,
                                     preexec_fn=_die_with_parent if on_main else None)
        except BaseException:
            log_file.close()
            raise
        child = _Child(name, popen, log_path, log_file)
        self._children.append(child)
        log.debug("started %s (pid %d)", name, popen.pid)
        return child

    def _spawn_azurite(self) -> None:
        exe = os.environ.get("DEVSTACK_AZURITE") or str(REPO_ROOT / "node_modules" / ".bin" / "azurite")
        if not os.path.exists(exe):
            raise StackError(f"Azurite not found at {exe}; run scripts/setup.sh")
        data = self.workdir / "azurite"
        data.mkdir(exist_ok=True)
        self._spawn("azurite", [
            exe, "--location", str(data),
            "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
            "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry", "--disableProductStyleUrl",
        ])

    def _registry_config(self, name: str, port: int, *, tls: bool, notify_url: Optional[str],
                         token_auth: bool = False) -> dict:
        root = self.workdir / "registries" / name
        root.mkdir(parents=True, exist_ok=True)
        http_cfg: dict[str, Any] = {
            "addr": f"127.0.0.1:{port}",
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if tls:
            http_cfg["tls"] = {"certificate": str(self.server_cert), "key": str(self.server_key)}
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True},
                    "fields": {"service": f"devstack-{name}"}},
            "storage": {
                "filesystem": {"rootdirectory": str(root)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http_cfg,
            "health": {"storagedriver": {"enabled": False}},
        }
        if token_auth:
            cfg["auth"] = {"token": {
                "realm": self.upstream_token_realm,
                "service": self.upstream_auth_service,
                "issuer": self.upstream_auth_issuer,
                "rootcertbundle": str(self.token_signer_cert),
            }}
        if notify_url:
            cfg["notifications"] = {
                "events": {"includereferences": True},
                "endpoints": [{
                    "name": "acr-emulator",
                    "url": notify_url,
                    "timeout": "2s",
                    "threshold": 2,
                    "backoff": "250ms",
                    "ignoredmediatypes": ["application/octet-stream"],
                    # pulls raise no ACR event; without this every manifest GET/HEAD the emulator
                    # proxies comes back to it as a notification request
                    "ignore": {"actions": ["pull"]},
                }],
            }
        return cfg

    def _spawn_registry(self, name: str, port: int, *, tls: bool, notify_url: Optional[str] = None,
                        token_auth: bool = False) -> None:
        exe = os.environ.get("DEVSTACK_DOCKER_REGISTRY") or shutil.which("docker-registry")
        if not exe:
            raise StackError("docker-registry is not installed; run scripts/setup.sh")
        cfg_path = self.workdir / f"registry-{name}.yml"
        cfg = self._registry_config(name, port, tls=tls, notify_url=notify_url, token_auth=token_auth)
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        os.chmod(cfg_path, 0o600)  # holds the http secret
        # GOGC=400: distribution allocates a lot per request and its heap is small; collecting 4x less
        # often took a third of its CPU per manifest HEAD (the plan bench sends thousands)
        self._spawn(f"registry-{name}", [exe, "serve", str(cfg_path)],
                    env={"SSL_CERT_FILE": str(self.ca_pem), "GOGC": REGISTRY_GOGC})

    def _start_emulator(self) -> None:
        from devstack.emulator.server import start_in_thread
        from devstack.emulator.state import Emulator, EmulatorConfig

        options = dict(
            subscription_id=self.subscription_id,
            resource_group=self.resource_group,
            registry_name=self.registry_name,
            location=self.location,
            host="127.0.0.1",
            port=self.emulator_port,
            backing_url=self.backing_url,
            ca_cert_path=str(self.ca_pem),
            storage_connection_string=self.connection_string,
            identity_header=self.identity_header,
            agent_pools={"vnetpool": {"count": 0, "tier": "S1", "os": "Linux"}},
            backing_storage_path=str(self.workdir / "registries" / "backing"),
            upstream_token_key_path=str(self.token_signer_key),
            upstream_token_cert_path=str(self.token_signer_cert),
            upstream_token_service=self.upstream_auth_service,
            upstream_token_issuer=self.upstream_auth_issuer,
            upstream_token_username=self.upstream_auth_user,
            upstream_token_password=self.upstream_auth_password,
        )
        options.update(self._profile_options)
        options.update(self.emulator_options)
        self.emulator = Emulator(EmulatorConfig(**options))
        self._emulator_handle = start_in_thread(self.emulator, str(self.server_cert), str(self.server_key))

    def source_acr(self) -> SourceAcr:
        """A second emulated ACR, ``airlocksrc`` in resource group ``airlock-src-rg`` of the same subscription
        and tenant, started on the first call: its own backing registry (plain HTTP) and emulator (TLS, the
        stack's certificate). Its data plane accepts the stack's managed identity (the ACR token exchange);
        the stack's ACR imports from it by resource id, reading its content with no credentials."""
        from devstack.emulator.server import start_in_thread
        from devstack.emulator.state import Emulator, EmulatorConfig

        with self._source_lock:
            if self._source_acr is not None:
                return self._source_acr
            if self.emulator is None or not self.running:
                raise StackError("a source ACR needs the running stack with its emulator")
            [port] = free_ports(1)
            self._spawn_registry("source-backing", port, tls=False)
            deadline = time.monotonic() + self.startup_timeout
            child = self._child("registry-source-backing")
            while True:
                self._check_alive(child)
                try:
                    if self._http("GET", port, "/v2/", tls=False, timeout=2)[0] == 200:
                        break
                except (OSError, http.client.HTTPException):
                    pass
                if time.monotonic() > deadline:
                    raise StackError(f"the source ACR's backing registry did not answer in time\n{child.log_tail()}")
                time.sleep(0.05)
            peer = Emulator(EmulatorConfig(
                subscription_id=self.subscription_id, resource_group=SOURCE_ACR_RESOURCE_GROUP,
                registry_name=SOURCE_ACR_NAME, location=self.location, host="127.0.0.1", port=0,
                backing_url=f"http://127.0.0.1:{port}", ca_cert_path=str(self.ca_pem),
                backing_storage_path=str(self.workdir / "registries" / "source-backing")))
            peer.auth.trust_identities_of(self.emulator.auth)  # one tenant: the app's identity works on both
            self._source_handle = start_in_thread(peer, str(self.server_cert), str(self.server_key))
            self.emulator.config.peer_registries[peer.registry_id] = peer.config.backing_url
            self._source_acr = SourceAcr(peer, peer.login_server, peer.registry_id, f"127.0.0.1:{port}")
            log.info("source ACR %s up at %s", SOURCE_ACR_NAME, peer.login_server)
            return self._source_acr

    def _child(self, name: str) -> Optional[_Child]:
        return next((c for c in self._children if c.name == name), None)

    def _check_alive(self, child: Optional[_Child]) -> None:
        if child is not None and child.popen.poll() is not None:
            raise StackError(f"{child.name} exited with {child.popen.returncode} during start-up:\n{child.log_tail()}")

    def _wait_port(self, name: str, port: int, deadline: float, child: Any = "auto") -> None:
        child = self._child(name) if child == "auto" else child
        while not port_open(port):
            self._check_alive(child)
            if time.monotonic() > deadline:
                tail = child.log_tail() if child else ""
                raise StackError(f"{name} did not listen on 127.0.0.1:{port} in time\n{tail}")
            time.sleep(0.05)

    def _wait_registry(self, name: str, deadline: float) -> None:
        child = self._child(f"registry-{name}")
        port = {"upstream": self.upstream_port, "upstream-auth": self.upstream_auth_port}.get(name, self.backing_port)
        ready = 401 if name == "upstream-auth" else 200  # token auth: /v2/ challenges, which means it is up
        last: Any = None
        while True:
            self._check_alive(child)
            try:
                status, _ = self._http("GET", port, "/v2/", tls=name.startswith("upstream"), timeout=2)
                if status == ready:
                    return
                last = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise StackError(f"registry {name} /v2/ did not answer in time ({last})\n{child.log_tail()}")
            time.sleep(0.05)

    def _terminate(self, child: _Child, grace: float = 5.0) -> None:
        pgid = child.pid  # start_new_session=True: the child leads its own group
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        except OSError as exc:  # pragma: no cover - e.g. EPERM
            if exc.errno != errno.ESRCH:
                log.warning("SIGTERM to %s failed: %s", child.name, exc)
        try:
            child.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing", child.name, grace)
        # Whatever is left in the group (the leader if it hung, or grandchildren) is killed.
        end = time.monotonic() + grace
        while group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                break
            if child.popen.poll() is None:
                try:
                    child.popen.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
            if time.monotonic() > end:
                log.error("process group %d (%s) would not die", pgid, child.name)
                break
            time.sleep(0.02)
        child.popen.poll()
        try:
            child.log_file.close()
        except OSError:
            pass

    # ----------------------------------------------------------------- env

    def _build_env(self) -> dict[str, str]:
        up = self.upstream_host
        return {
            "AZURE_SUBSCRIPTION_ID": self.subscription_id,
            "ACR_RESOURCE_GROUP": self.resource_group,
            "ACR_NAME": self.registry_name,
            "ARM_ENDPOINT": self.arm_endpoint,
            "IDENTITY_ENDPOINT": f"{self.arm_endpoint}/msi/token",
            "IDENTITY_HEADER": self.identity_header,
            "REQUESTS_CA_BUNDLE": str(self.ca_pem),
            "SSL_CERT_FILE": str(self.ca_pem),
            "AzureWebJobsStorage": self.connection_string,
            "SOURCE_REGISTRY_MIRRORS": ",".join(f"{r}={up}" for r in MIRRORED_REGISTRIES),
            "DEVSTACK_UPSTREAM": up,
            "DEVSTACK_UPSTREAM_AUTH": self.upstream_auth_host,
            "DEVSTACK_UPSTREAM_AUTH_USER": self.upstream_auth_user,
            "DEVSTACK_UPSTREAM_AUTH_PASSWORD": self.upstream_auth_password,
            "DEVSTACK_BACKING": self.backing_url,
            "DEVSTACK_CERTS_DIR": str(self.certs_dir),
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def _write_env(self) -> None:
        self.env = self._build_env()
        self.env_path = self._env_file_arg or (self.workdir / "devstack.env")
        self.env_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.env_path.with_name(self.env_path.name + ".tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(self.env_text())
        os.replace(tmp, self.env_path)

    def env_text(self, *, mask_secrets: bool = False) -> str:
        """The env file's content: KEY=VALUE lines, unquoted; ``mask_secrets`` shows secrets as ***."""
        return "".join(f"{k}={'***' if mask_secrets and k in SECRET_ENV_KEYS else v}\n" for k, v in self.env.items())

    def apply_env(self, target: Any = None) -> Any:
        """Put ``stack.env`` into ``target``: a pytest monkeypatch (setenv), a mapping, or os.environ."""
        if target is None:
            target = os.environ
        setenv = getattr(target, "setenv", None)
        for key, value in self.env.items():
            if setenv is not None:
                setenv(key, value)
            else:
                target[key] = value
        return target

    # ----------------------------------------------------------------- helpers

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts (only) the local CA."""
        return ssl.create_default_context(cafile=str(self.ca_pem))

    def _http(self, method: str, port: int, path: str, *, tls: bool, body: Optional[bytes] = None,
              headers: Optional[dict[str, str]] = None, timeout: float = 10) -> tuple[int, bytes]:
        if tls:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=timeout, context=self.ssl_context())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def admin(self, method: str, path: str, payload: Any = None) -> Any:
        """Call one of the emulator's /_devstack admin endpoints; returns the decoded JSON (or None)."""
        if not self.with_emulator or self.emulator_port is None:
            raise StackError("this stack runs no emulator")
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status, data = self._http(method, self.emulator_port, path, tls=True, body=body, headers=headers)
        if status >= 400:
            raise StackError(f"{method} {path}: HTTP {status}: {data[:500]!r}")
        return json.loads(data) if data.strip() else None

    def add_fault(self, spec: dict) -> Any:
        return self.admin("POST", "/_devstack/faults", spec)

    def clear_faults(self) -> Any:
        return self.admin("DELETE", "/_devstack/faults")

    def settings(self, **values: Any) -> Any:
        """e.g. ``stack.settings(import_latency=0.2, run_step_seconds=0.1)``."""
        return self.admin("POST", "/_devstack/settings", values)

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopped else "new")
        return f"<Stack {state} workdir={self.workdir}>"
