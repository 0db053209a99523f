"""The two pipelines for the images.txt workflow, read as YAML: their triggers, their sign-in, and every
command line of ours they run parsed by the CLI's own argparse parser (so a renamed command or flag fails
here, not in a user's pipeline). scripts/plan_summary.py renders a real plan from the stand-in."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github" / "workflows" / "images.yml"
DEVOPS = ROOT / "pipelines" / "azure-pipelines.yml"
OURS = re.compile(r"(?:-m shared|\bairlock)\s")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def scripts(node) -> list[str]:
    """Every shell script in a pipeline document (run:, script:, inlineScript:)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("run", "script", "inlineScript") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(scripts(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(scripts(item))
    return found


def commands(script: str) -> list[list[str]]:
    """Our command lines in a script, as argv after `python -m shared` / `airlock`, up to a shell operator."""
    joined = script.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in OURS.finditer(line):
            words = []
            for word in shlex.split(line[m.end():], comments=True):
                if word in ("|", "||", "&&", ";", ">", ">>", "2>", "<") or word.startswith((">", "|")):
                    break
                words.append(word)
            found.append(words)
    return found


def cli_parser() -> argparse.ArgumentParser:
    import shared.cli as cli

    for name in ("build_parser", "make_parser", "parser", "_parser"):
        factory = getattr(cli, name, None)
        if callable(factory):
            parser = factory()
            if isinstance(parser, argparse.ArgumentParser):
                return parser
    raise AssertionError("shared.cli exposes no argparse parser factory")


def parse(argv: list[str]) -> argparse.Namespace:
    from shared.cli import UsageError  # the CLI's parser raises it instead of exiting (exit code 2)

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            return cli_parser().parse_args(argv)
        except UsageError as exc:
            raise AssertionError(f"the CLI rejects {argv}: {exc.message}") from None
        except SystemExit:
            raise AssertionError(f"the CLI rejects {argv}: {stderr.getvalue().strip()}") from None


@pytest.mark.parametrize("path", [GITHUB, DEVOPS], ids=["github", "azure-devops"])
def test_every_cli_command_exists_with_those_flags(path):
    argvs = [argv for script in scripts(load(path)) for argv in commands(script)]
    assert argvs, f"{path.name} runs none of our commands"
    parsed = [parse(argv) for argv in argvs]
    wanted = {("manifest", "images.txt"), ("plan", "images.txt"), ("runs", "images.txt")}
    got = {(p.command, getattr(p, "file", None)) for p in parsed}
    assert wanted <= got, got
    plan = next(p for p in parsed if p.command == "plan")
    assert plan.json is True
    wait = next(p for p in parsed if p.command == "runs")
    assert wait.runs_command == "wait" and wait.name == "images.txt"


def test_the_command_checker_rejects_unknown_commands_and_flags():
    with pytest.raises(AssertionError):
        parse(["plan", "images.txt", "--jsn"])
    with pytest.raises(AssertionError):
        parse(["runs", "follow", "x"])
    assert commands('python -m shared plan images.txt --json > plan.json || status=$?') == [
        ["plan", "images.txt", "--json"]]


def uploads(path: Path) -> list[str]:
    return [line for script in scripts(load(path)) for line in script.replace("\\\n", " ").splitlines()
            if "az storage blob upload" in line]


def test_smoke_script_waits_with_a_command_that_exists():
    text = (ROOT / "scripts" / "smoke.sh").read_text()
    [argv] = commands(text)
    parsed = parse(argv)
    assert parsed.command == "runs" and parsed.runs_command == "wait" and parsed.timeout == 600
    assert "--auth-mode login" in text and "x-functions-key" in text


def test_github_workflow_triggers_and_oidc():
    workflow = load(GITHUB)
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert on["pull_request"]["paths"] == ["images.txt"]
    assert on["push"]["paths"] == ["images.txt"] and on["push"]["branches"] == ["main"]
    assert workflow["permissions"]["id-token"] == "write"
    logins = [step for job in workflow["jobs"].values() for step in job["steps"]
              if str(step.get("uses", "")).startswith("azure/login@")]
    assert len(logins) == 2
    for login in logins:
        assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}  # OIDC: no creds, no secret
    jobs = workflow["jobs"]
    assert jobs["plan"]["if"] == "github.event_name == 'pull_request'"
    assert jobs["import"]["if"] == "github.event_name == 'push'"
    [upload] = uploads(GITHUB)
    assert "--auth-mode login" in upload and "--name images.txt" in upload
    assert "$GITHUB_STEP_SUMMARY" in "\n".join(scripts(jobs["plan"]))
    assert "secrets." not in GITHUB.read_text()


def oidc_subjects(workflow: dict) -> set[str]:
    """The subject of the OIDC token each job that signs in to Azure presents, by GitHub's rules: a job with
    an environment, repo:ORG/REPO:environment:NAME; else a pull request's, repo:ORG/REPO:pull_request; else
    a branch push's, repo:ORG/REPO:ref:refs/heads/BRANCH. Entra ID accepts the token only when the app has a
    federated credential with that exact subject (else AADSTS700213)."""
    on = workflow.get("on", workflow.get(True))
    subjects = set()
    for job in workflow["jobs"].values():
        if not any(str(step.get("uses", "")).startswith("azure/login@") for step in job["steps"]):
            continue
        environment = job.get("environment")
        if environment:
            name = environment["name"] if isinstance(environment, dict) else environment
            subjects.add(f"repo:ORG/REPO:environment:{name}")
        elif "pull_request" in job.get("if", ""):
            subjects.add("repo:ORG/REPO:pull_request")
        else:
            subjects.update(f"repo:ORG/REPO:ref:refs/heads/{branch}" for branch in on["push"]["branches"])
    return subjects


def test_every_oidc_subject_the_workflow_presents_has_its_federated_credential_documented():
    subjects = oidc_subjects(load(GITHUB))
    assert subjects == {"repo:ORG/REPO:pull_request", "repo:ORG/REPO:environment:production"}
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    commands = re.findall(r"^az ad app federated-credential create .*?(?<!\\)$", deployment, re.M | re.S)
    documented = set()
    for command in commands:
        words = shlex.split(command.replace("\\\n", " "))
        credential = json.loads(words[words.index("--parameters") + 1])
        assert credential["issuer"] == "https://token.actions.githubusercontent.com"  # no trailing slash
        assert credential["audiences"] == ["api://AzureADTokenExchange"]
        documented.add(credential["subject"])
    assert documented == subjects
    assert "AADSTS700213" in deployment
    header = GITHUB.read_text().split("\nname:", 1)[0]
    for subject in subjects:
        assert subject in header, f"the workflow's header does not name the federated credential {subject}"

def test_azure_devops_pipeline_triggers_and_federated_sign_in():
    pipeline = load(DEVOPS)
    assert pipeline["trigger"]["paths"]["include"] == ["images.txt"]
    assert pipeline["pr"]["paths"]["include"] == ["images.txt"]
    plan, imports = pipeline["stages"]
    assert "PullRequest" in plan["condition"] and "ne(variables['Build.Reason'], 'PullRequest')" in imports["condition"]
    tasks = [step for stage in pipeline["stages"] for job in stage["jobs"] for step in job["steps"]
             if str(step.get("task", "")).startswith("AzureCLI@")]
    assert tasks and all(t["inputs"]["azureSubscription"] == "${{ variables.serviceConnection }}" for t in tasks)
    [upload] = uploads(DEVOPS)
    assert "--auth-mode login" in upload
    assert "task.uploadsummary" in DEVOPS.read_text()


def test_plan_summary_renders_a_real_plan(stack, seeded, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(stack.env_text())
    manifest = tmp_path / "images.txt"
    manifest.write_text("library/busybox:1.36 => summary/busybox\nnginx:1.27 => summary/nginx\n")
    done = subprocess.run([sys.executable, "-m", "shared", "--env-file", str(env_file), "plan", str(manifest),
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(done.stdout)
    rendered = subprocess.run([sys.executable, str(ROOT / "scripts" / "plan_summary.py"), str(plan_file)],
                              capture_output=True, text=True, check=True).stdout
    assert rendered.startswith("## Import plan for `images.txt`")
    assert "| 1 | summary/busybox:1.36 | new | docker.io/library/busybox:1.36 | sha256:" in rendered
    assert "2 entries: **2 new**" in rendered


def test_plan_summary_lists_errors_with_line_numbers(tmp_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"manifest": {"name": "images.txt"}, "errors": [
        {"line": 3, "message": "invalid reference 'A|B'"}], "entries": [], "summary": {}}))
    rendered = subprocess.run([sys.executable, str(ROOT / "scripts" / "plan_summary.py"), str(plan_file)],
                              capture_output=True, text=True, check=True).stdout
    assert "**1 error(s); nothing would be imported:**" in rendered
    assert "- line 3: invalid reference 'A\\|B'" in rendered
