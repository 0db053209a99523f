"""Stand-ins for the command-line tools the deployment scripts call (az, azd, curl, sleep, ...).

Neither Azure, Azure DevOps nor GitHub can be reached from here, so the scripts in scripts/ and the
pipelines' inline scripts run against these: each stand-in records its argv and a few environment
variables (one JSON line per call in ``calls.jsonl``) and answers from rules the test gives. What the
tests check is the scripts' own logic: which subscription, URL, name and order they use, what they do
with an answer. Nothing here claims to behave like the real tools beyond the answers a test scripts.

A rule: ``{"tool": "az", "prefix": ["rest"], "responses": [{"stdout": "...", "stderr": "...",
"exit": 0}, ...]}``. The first rule whose tool matches and whose prefix starts the argv answers; its
responses are used in turn, the last one repeating; ``{n}`` in a response's text is replaced by the
rule's call count (1, 2, ...). No matching rule: exit 0, no output.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

RECORDED_ENV = ("AZURE_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME", "ACR_LOGIN_SERVER",
                "AzureWebJobsStorage__blobServiceUri", "MANIFESTS_CONTAINER", "OUTCOMES_CONTAINER")

_SHIM = '''#!{python}
import json, os, sys
from pathlib import Path
here = Path(__file__).resolve().parent
tool, argv = Path(sys.argv[0]).name, sys.argv[1:]
rules = json.loads((here / "rules.json").read_text())
state_file = here / "state.json"
state = json.loads(state_file.read_text()) if state_file.exists() else {{}}
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps({{"tool": tool, "argv": argv, "cwd": os.getcwd(),
                          "env": {{k: os.environ[k] for k in {recorded!r} if k in os.environ}}}}) + "\\n")
for index, rule in enumerate(rules):
    if rule["tool"] == tool and argv[:len(rule.get("prefix", []))] == rule.get("prefix", []):
        n = state.get(str(index), 0) + 1
        state[str(index)] = n
        state_file.write_text(json.dumps(state))
        responses = rule["responses"]
        response = responses[min(n, len(responses)) - 1]
        sys.stdout.write(response.get("stdout", "").replace("{{n}}", str(n)))
        sys.stderr.write(response.get("stderr", "").replace("{{n}}", str(n)))
        sys.exit(response.get("exit", 0))
'''


@dataclass
class Shims:
    """A folder of stand-in executables, put first on PATH."""

    folder: Path
    rules: list[dict] = field(default_factory=list)

    @classmethod
    def create(cls, folder: Path, tools: list[str], rules: list[dict]) -> "Shims":
        folder.mkdir(parents=True, exist_ok=True)
        text = _SHIM.format(python=sys.executable, recorded=RECORDED_ENV)
        for tool in tools:
            path = folder / tool
            path.write_text(text)
            path.chmod(0o755)
        (folder / "rules.json").write_text(json.dumps(rules))
        return cls(folder, rules)

    def env(self, **values: str) -> dict[str, str]:
        """A minimal environment: PATH with the stand-ins first (then the system's, for sh, sed, ...)."""
        return {"PATH": f"{self.folder}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.folder), "LANG": "C.UTF-8",
                **values}

    def calls(self, tool: str | None = None) -> list[dict]:
        path = self.folder / "calls.jsonl"
        found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [c for c in found if tool is None or c["tool"] == tool]

    def run(self, argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def option(argv: list[str], name: str) -> str | None:
    """The value after ``name`` in an argv (``--name value`` or ``--name=value``), or None."""
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def assert_in_subscription(call: dict, subscription: str) -> None:
    """An az call that reaches Azure Resource Manager names ``subscription`` explicitly: with
    --subscription, or (az rest) in the request's URI. The Azure CLI's default subscription is never used."""
    argv = call["argv"]
    if argv[:1] in (["login"], ["account"], ["logout"]):
        return
    if argv[:1] == ["rest"]:
        uri = option(argv, "--uri") or option(argv, "--url") or ""
        path = uri.split("management.azure.com", 1)[-1]
        assert path.lower().startswith(f"/subscriptions/{subscription}/".lower()), f"az {' '.join(argv)}"
        return
    assert option(argv, "--subscription") == subscription, \
        f"az {' '.join(argv)}: not pinned to subscription {subscription} (the CLI's default may be another)"
