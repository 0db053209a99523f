"""The command line on its own, the ``az`` way, where no stand-in is needed: the settings mode, the credential
it picks, its one-line failures, and how long an endpoint that answers nothing may take.

The "current az login" is ``tests.azcli``'s stand-in ``az`` on PATH (a test double of the external Azure
CLI: it answers ``account show`` and ``account get-access-token`` as ``az`` does). Commands run as separate
processes (``python -m shared``), as pipelines run them. The time bounds are behaviour ("fails within about
10 s, not after minutes of retries"), asserted loosely, not benchmarks.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared.adapters.credentials import KeptTokens, one_line
from shared.config import Settings, credential_kind
from shared.errors import ConfigError
from tests import azcli

ROOT = Path(__file__).resolve().parents[2]
BOUND = 30  # seconds: "about 10 s" with a generous margin for a loaded machine
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def airlock(*args: str, env: dict, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "shared", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=120, env={**env, "PYTHONPATH": str(ROOT)})
    return result, time.monotonic() - started


@contextmanager
def blackhole():
    """A 127.0.0.1 port whose listen queue is full: connections to it are neither accepted nor refused (SYNs
    are dropped), as with a firewall that drops packets."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        client = socket.socket()
        client.setblocking(False)
        try:
            client.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(client)
    time.sleep(0.2)
    try:
        yield port
    finally:
        for client in fillers:
            client.close()
        server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def work(tmp_path) -> Path:
    (tmp_path / "images.txt").write_text("nginx:1.27\n")
    return tmp_path


def az_env(tmp_path: Path, **kwargs) -> tuple[dict, azcli.FakeAz]:
    fake = azcli.install(tmp_path / "az", subscription=kwargs.pop("subscription", "sub-from-az"), **kwargs)
    return {"PATH": fake.path(), "HOME": str(tmp_path)}, fake


# -- settings ------------------------------------------------------------------------------------

def test_the_command_line_mode_needs_nothing_and_storage_is_optional():
    settings = Settings.from_env({"ACR_NAME": "myacr"}, cli=True)
    assert (settings.cli, settings.subscription_id, settings.resource_group, settings.has_storage) == \
        (True, "", "", False)
    with pytest.raises(ConfigError):  # the Function App still needs them
        Settings.from_env({"ACR_NAME": "myacr"})


@pytest.mark.parametrize("env, kind", [
    ({}, "azure-cli"),
    ({"IDENTITY_ENDPOINT": "http://x/msi", "IDENTITY_HEADER": "h"}, "managed-identity"),
    ({"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_SECRET": "s"}, "environment"),
    ({"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_CERTIFICATE_PATH": "/c.pem"}, "environment"),
    ({"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_FEDERATED_TOKEN_FILE": "/t"}, "workload-identity"),
    ({"AZURE_CLIENT_ID": "c"}, "azure-cli"),  # a client id alone (a user-assigned identity's) sets up nothing
])
def test_cli_credential_auto_follows_the_environment(env, kind):
    assert credential_kind(env) == kind
    assert Settings.from_env(env, cli=True).credential == kind
    assert Settings.from_env({**env, "CLI_CREDENTIAL": "default"}, cli=True).credential == "default"


def test_a_bad_cli_credential_is_named(work):
    with pytest.raises(ConfigError, match="CLI_CREDENTIAL: must be one of auto, azure-cli"):
        Settings.from_env({"CLI_CREDENTIAL": "browser"}, cli=True)


# -- credentials ---------------------------------------------------------------------------------

CHAIN = """DefaultAzureCredential failed to retrieve a token from the included credentials.
Attempted credentials:
\tEnvironmentCredential: EnvironmentCredential authentication unavailable. Environment variables are not fully \
configured.
Visit https://aka.ms/azsdk/python/identity/environmentcredential/troubleshoot to troubleshoot this issue.
\tManagedIdentityCredential: App Service managed identity configuration not found in environment. Token request \
error: (invalid_scope) 401, The X-IDENTITY-HEADER header is not valid.
\tAzureCliCredential: Please run 'az login' to set up an account
To mitigate this issue, please refer to the troubleshooting guidelines here at https://aka.ms/azsdk/python/identity/\
defaultazurecredential/troubleshoot."""


def test_a_credential_chain_reads_as_one_line():
    assert one_line(CHAIN) == (
        "EnvironmentCredential: Environment variables are not fully configured.; ManagedIdentityCredential: App "
        "Service managed identity configuration not found in environment. Token request error: (invalid_scope) 401, "
        "The X-IDENTITY-HEADER header is not valid.; AzureCliCredential: Please run 'az login' to set up an account")
    assert one_line("Azure CLI not found on path\nTo mitigate this issue, ...") == "Azure CLI not found on path"


def test_azure_cli_tokens_are_kept_until_shortly_before_they_expire():
    class Token:
        def __init__(self, expires_on):
            self.expires_on = expires_on

    calls = []

    class Az:
        def get_token(self, *scopes, **kwargs):
            calls.append(scopes)
            return Token(now[0] + 3600)

    now = [1000.0]
    kept = KeptTokens(Az(), clock=lambda: now[0])
    first = kept.get_token("https://management.azure.com/.default")
    assert kept.get_token("https://management.azure.com/.default") is first
    kept.get_token("https://containerregistry.azure.net/.default")
    assert len(calls) == 2
    now[0] += 3600 - 200  # within the refresh margin: asked again
    assert kept.get_token("https://management.azure.com/.default") is not first and len(calls) == 3


# -- the az login --------------------------------------------------------------------------------

def test_no_az_login_says_so_in_one_line(tmp_path, work):
    env, fake = az_env(tmp_path, logged_in=False)
    result, seconds = airlock("plan", "images.txt", "--registry", "myacr", env=env, cwd=work)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("error: no subscription: az account show failed (Please run 'az login' to "
                                    "setup account.); run az login") and len(result.stderr.splitlines()) == 1
    assert seconds < BOUND
    # with the subscription given, the credential is what fails: named, with the Azure CLI's reason
    result, seconds = airlock("plan", "images.txt", "--registry", "myacr", "--subscription", "s1", env=env, cwd=work)
    assert result.returncode == 1 and result.stderr == (
        "error: CredentialUnavailable: AzureCliCredential could not get a token for https://management.azure.com: "
        "Please run 'az login' to set up an account\n")
    assert seconds < BOUND


def test_without_az_on_path_the_subscription_is_asked_for(tmp_path, work):
    result, _ = airlock("plan", "images.txt", "--registry", "myacr", env={"PATH": "/usr/bin:/bin",
                                                                          "HOME": str(tmp_path)}, cwd=work)
    assert result.returncode == 2 and "the Azure CLI (az) is not on PATH" in result.stderr
    assert "--subscription" in result.stderr and len(result.stderr.splitlines()) == 1


def test_the_credential_chain_text_only_with_vv(tmp_path, work):
    """CLI_CREDENTIAL=default: DefaultAzureCredential's chain. Without -vv one line (each attempt, briefly);
    with -vv azure-identity's whole text too."""
    env, _ = az_env(tmp_path, logged_in=False)
    env["CLI_CREDENTIAL"] = "default"
    argv = ("plan", "images.txt", "--registry", "myacr", "--subscription", "s1")
    result, seconds = airlock(*argv, env=env, cwd=work)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: CredentialUnavailable: DefaultAzureCredential could not get a token")
    assert "AzureCliCredential: Please run 'az login'" in result.stderr and "Attempted credentials" not in \
        result.stderr
    assert seconds < BOUND
    verbose, _ = airlock(*argv, "-vv", env=env, cwd=work)
    assert "Attempted credentials:" in verbose.stderr


def test_an_unreachable_identity_endpoint_is_named(tmp_path, work):
    port = closed_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "IDENTITY_ENDPOINT": f"http://127.0.0.1:{port}/msi/token",
           "IDENTITY_HEADER": "x"}
    result, seconds = airlock("plan", "images.txt", "--registry", "myacr", "--subscription", "s1", env=env, cwd=work)
    assert result.returncode == 1 and result.stderr == (
        f"error: Unreachable: cannot reach the identity endpoint of ManagedIdentityCredential at "
        f"http://127.0.0.1:{port}: connection refused\n")
    assert seconds < BOUND


# -- endpoints that answer nothing -----------------------------------------------------------------

def test_an_arm_endpoint_that_answers_nothing_fails_within_seconds_naming_it(tmp_path, work):
    env, _ = az_env(tmp_path, token="refused")  # a token: ARM is never reached to judge it
    with blackhole() as port:
        env["ARM_ENDPOINT"] = f"https://127.0.0.1:{port}"
        result, seconds = airlock("plan", "images.txt", "--registry", "myacr", env=env, cwd=work)
    assert result.returncode == 1 and result.stderr == (
        f"error: Unreachable: cannot reach ARM at https://127.0.0.1:{port}: no connection within 5s\n")
    assert seconds < BOUND


def test_a_storage_account_that_answers_nothing_fails_within_seconds_naming_it(tmp_path, work):
    with blackhole() as port:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AzureWebJobsStorage": (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")}
        result, seconds = airlock("runs", "show", "20260101T000000Z-abcdef12", env=env, cwd=work)
    assert result.returncode == 1 and result.stderr == (
        f"error: Unreachable: cannot reach storage (blobs) at http://127.0.0.1:{port}: no connection within 5s\n")
    assert seconds < BOUND


# -- storage is optional, until a command needs the records ------------------------------------------

@pytest.mark.parametrize("argv, command", [
    (["runs", "show", "20260101T000000Z-abcdef12"], "runs show"),
    (["runs", "list"], "runs list"),
    (["sync", "--resume", "20260101T000000Z-abcdef12", "--registry", "myacr"], "sync --resume"),
])
def test_commands_that_read_records_say_they_need_storage(tmp_path, work, argv, command):
    result, _ = airlock(*argv, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=work)
    assert result.returncode == 2 and result.stderr.startswith(
        f"error: {command} needs the outcome records in storage: set AzureWebJobsStorage")


# -- ids, tokens, counts -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["runs", "show", "../../etc/passwd"], ["runs", "show", "-x"],
                                  ["sync", "--resume", "a b"], ["runs", "list", "--next", "not-a-token"]])
def test_ids_and_tokens_that_cannot_be_are_usage_errors(tmp_path, work, argv):
    result, _ = airlock(*argv, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, cwd=work)
    assert result.returncode == 2 and "usage: python -m shared" in result.stderr and "Traceback" not in result.stderr


def test_the_error_total_counts_every_problem_and_json_keeps_the_valid_lines(tmp_path):
    import json

    manifest = tmp_path / "images.txt"
    manifest.write_text("nginx:1.27\nquay.io/jetstack/cert-manager-controller:v1.15.2 => jetstack/cm\n"
                        + "".join(f"Bad:{i}\n" for i in range(150)))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    text, _ = airlock("manifest", "check", "images.txt", "--no-lock", env=env, cwd=tmp_path)
    assert text.returncode == 1
    assert text.stdout.splitlines()[-1] == "images.txt: 150 error(s); nothing would be imported"
    document, _ = airlock("manifest", "check", "images.txt", "--no-lock", "--json", env=env, cwd=tmp_path)
    parsed = json.loads(document.stdout)
    assert [e["line"] for e in parsed["entries"]] == [1, 2] and parsed["error_count"] == 150
    assert len(parsed["errors"]) == 101 and parsed["errors"][-1]["message"] == "... and 50 more problems not listed"

