"""A stand-in for the Azure CLI (``az``) on PATH, for the command line's "current az login" path.

This is a test double of an external program, not of our code: azure-identity's AzureCliCredential runs
``az account get-access-token --output json --resource R [--tenant T]`` and the command line runs
``az account show --output json`` for the current subscription. Real ``az`` is not installed here and
cannot log in to the local stand-in, so ``install`` writes an executable ``az`` that answers those two
commands as ``az`` does (the JSON fields azure-identity and ``shared.adapters.credentials`` read):

- ``account show``: ``{"id": SUBSCRIPTION, "tenantId", "name", "isDefault": true, "user": {...}}``;
- ``account get-access-token``: a token the ACR emulator accepts, fetched from the stand-in's
  managed-identity endpoint (the emulator signs every token it accepts; ``az`` would get one from Entra
  ID), printed as ``{"accessToken", "expiresOn", "expires_on", "subscription", "tenant", "tokenType"}``;
- ``logged_in=False``: both fail as ``az`` does before ``az login`` (exit 1, ``ERROR: Please run 'az login'
  to setup account.``);
- ``token="refused"``: a token that is not the emulator's (a wrong identity: ARM answers 401).

Every call is appended to ``calls.log`` beside the script (one line of arguments), so tests can count them.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = r'''#!{python}
import datetime, json, ssl, sys, urllib.parse, urllib.request
CONFIG = json.load(open({config!r}))
args = sys.argv[1:]
with open({calls!r}, "a") as log:
    log.write(" ".join(args) + "\n")
def fail(text, code=1):
    sys.stderr.write(text + "\n")
    sys.exit(code)
if not CONFIG["logged_in"]:
    fail("ERROR: Please run 'az login' to setup account.")
if args[:2] == ["account", "show"]:
    print(json.dumps({{"id": CONFIG["subscription"], "tenantId": CONFIG["tenant"], "name": "stand-in",
                      "isDefault": True, "state": "Enabled", "user": {{"name": "dev@example.com", "type": "user"}}}}))
    sys.exit(0)
if args[:2] == ["account", "get-access-token"]:
    resource = args[args.index("--resource") + 1]
    if CONFIG["token"] == "refused":
        token, expires = "not-a-token-of-this-tenant", 4102444800
    else:
        query = urllib.parse.urlencode({{"resource": resource, "api-version": "2019-08-01"}})
        request = urllib.request.Request(CONFIG["identity_endpoint"] + "?" + query,
                                         headers={{"X-IDENTITY-HEADER": CONFIG["identity_header"]}})
        context = ssl.create_default_context(cafile=CONFIG["ca_bundle"] or None)
        answer = json.load(urllib.request.urlopen(request, context=context, timeout=10))
        token, expires = answer["access_token"], int(answer["expires_on"])
    local = datetime.datetime.fromtimestamp(expires).strftime("%Y-%m-%d %H:%M:%S.%f")
    print(json.dumps({{"accessToken": token, "expiresOn": local, "expires_on": expires,
                      "subscription": CONFIG["subscription"], "tenant": CONFIG["tenant"], "tokenType": "Bearer"}}))
    sys.exit(0)
fail("ERROR: 'az " + " ".join(args) + "' is not something this stand-in answers", 2)
'''


@dataclass(frozen=True)
class FakeAz:
    directory: Path   # put it first on PATH
    calls_log: Path

    def calls(self) -> list[str]:
        return self.calls_log.read_text().splitlines() if self.calls_log.exists() else []

    def path(self, rest: str = "/usr/bin:/bin") -> str:
        return f"{self.directory}{os.pathsep}{rest}"


def install(directory: Path, *, subscription: str, identity_endpoint: str = "", identity_header: str = "",
            ca_bundle: str = "", tenant: str = "00000000-0000-0000-0000-0000000000aa", logged_in: bool = True,
            token: str = "emulator") -> FakeAz:
    directory.mkdir(parents=True, exist_ok=True)
    config, calls = directory / "az-config.json", directory / "calls.log"
    config.write_text(json.dumps({"subscription": subscription, "tenant": tenant, "logged_in": logged_in,
                                  "token": token, "identity_endpoint": identity_endpoint,
                                  "identity_header": identity_header, "ca_bundle": ca_bundle}))
    script = directory / "az"
    script.write_text(_SCRIPT.format(python=sys.executable, config=str(config), calls=str(calls)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return FakeAz(directory, calls)


def for_stack(directory: Path, stack_env: dict, **kwargs) -> FakeAz:
    """An ``az`` logged in to the running stand-in (its subscription and managed-identity endpoint)."""
    return install(directory, subscription=stack_env["AZURE_SUBSCRIPTION_ID"],
                   identity_endpoint=stack_env["IDENTITY_ENDPOINT"], identity_header=stack_env["IDENTITY_HEADER"],
                   ca_bundle=stack_env.get("REQUESTS_CA_BUNDLE", ""), **kwargs)


# what a "registry name and az login" command line keeps from the stand-in's env: where Azure and the
# source registries are (on Azure these are the defaults: the public ARM endpoint, the system trust store)
WHERE_AZURE_IS = ("ARM_ENDPOINT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SOURCE_REGISTRY_MIRRORS", "NO_PROXY")


def standalone_env(stack_env: dict, fake: FakeAz, **extra) -> dict:
    """A process environment with only ``WHERE_AZURE_IS`` from the stand-in, the fake ``az`` on PATH, and
    ``extra``: no subscription, resource group, identity endpoint or storage."""
    env = {"PATH": fake.path(), "HOME": str(fake.directory), "LANG": "C.UTF-8"}
    env.update({k: stack_env[k] for k in WHERE_AZURE_IS if k in stack_env})
    env.update(extra)
    return env
