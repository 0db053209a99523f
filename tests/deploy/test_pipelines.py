"""The two pipelines for the images.txt workflow, read as YAML: their triggers, their sign-in, and every
command line of ours they run parsed by the CLI's own argparse parser (so a renamed command or flag fails
here, not in a user's pipeline). scripts/plan_summary.py renders a real plan from the stand-in. The
import jobs' scripts that follow a run are run here (stand-ins for az and curl, the real command line
against the local stand-in): a fresh sign-in before each wait, each wait shorter than a federated token
lives, and Azure DevOps' pool and time limit as parameters. The GitHub workflow's OIDC token subjects are
derived from its jobs and held to the federated credentials docs/deployment.md tells to create."""
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

from tests.deploy.shims import Shims

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
                if word in ("|", "||", "&&", ";") or re.match(r"\d*[<>|]", word):  # an operator or a redirection
                    break
                words.append(word)
            found.append(words)
    return found


def cli_parser() -> argparse.ArgumentParser:
    import shared.cli.dispatch as cli

    for name in ("build_parser", "make_parser", "parser", "_parser"):
        factory = getattr(cli, name, None)
        if callable(factory):
            parser = factory()
            if isinstance(parser, argparse.ArgumentParser):
                return parser
    raise AssertionError("shared.cli exposes no argparse parser factory")


def parse(argv: list[str]) -> argparse.Namespace:
    from shared.cli.args import UsageError  # the CLI's parser raises it instead of exiting (exit code 2)

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
    assert commands('{ python -m shared runs wait --file f --timeout 480 2>&1 >&3 | tee w >&2; } 3> r') == [
        ["runs", "wait", "--file", "f", "--timeout", "480"]]


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
    assert on["pull_request"]["paths"] == ["images.txt", "images.lock"]
    assert on["push"]["paths"] == ["images.txt", "images.lock"] and on["push"]["branches"] == ["main"]
    assert workflow["permissions"]["id-token"] == "write"
    logins = [step for job in workflow["jobs"].values() for step in job["steps"]
              if str(step.get("uses", "")).startswith("azure/login@")]
    assert len(logins) == 2
    for login in logins:
        assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}  # OIDC: no creds, no secret
    jobs = workflow["jobs"]
    assert jobs["plan"]["if"] == "github.event_name == 'pull_request'"
    assert jobs["import"]["if"] == "github.event_name == 'push'"
    lock, manifest = uploads(GITHUB)  # the lock first: the manifest's upload is the run, with the lock beside it
    assert "--auth-mode login" in lock and "--name images.lock" in lock
    assert "--auth-mode login" in manifest and "--name images.txt" in manifest
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
    assert pipeline["trigger"]["paths"]["include"] == ["images.txt", "images.lock"]
    assert pipeline["pr"]["paths"]["include"] == ["images.txt", "images.lock"]
    plan, imports = pipeline["stages"]
    assert "PullRequest" in plan["condition"] and "ne(variables['Build.Reason'], 'PullRequest')" in imports["condition"]
    tasks = [step for stage in pipeline["stages"] for job in stage["jobs"] for step in job["steps"]
             if str(step.get("task", "")).startswith("AzureCLI@")]
    assert tasks and all(t["inputs"]["azureSubscription"] == "${{ variables.serviceConnection }}" for t in tasks)
    lock, manifest = uploads(DEVOPS)
    assert "--auth-mode login" in lock and "--name images.lock" in lock
    assert "--auth-mode login" in manifest and "--name images.txt" in manifest
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


# -- following a long run: a fresh sign-in before each wait -------------------------------------------
# The federated (OIDC) token a job signs in with is valid for 10 minutes, and the Azure CLI cannot renew
# it: any token it must acquire after that fails with AADSTS700024. Both pipelines follow the run in waits
# shorter than that, each after a sign-in with a fresh token from GitHub / Azure DevOps. These tests run the
# pipelines' own scripts with stand-ins for az and curl (tests/deploy/shims.py) and the real command line
# against the local stand-in (its storage holds the run's record), with each wait shortened to half a second.
OIDC_TOKEN_LIFETIME = 600
PYTHON_WRAPPER = '''#!{python}
"""`python` for the pipeline scripts: the real interpreter. For `-m shared runs wait` it records the call,
puts images.txt into the manifests container (what the shimmed `az storage blob upload` would have done),
writes the run's final record and the blob trigger's claim on that upload into the stand-in's storage
before wait number FINAL_ON_WAIT (what the Function App does when the run ends), and shortens --timeout
to half a second."""
import hashlib, json, os, sys
from pathlib import Path
here = Path(__file__).resolve().parent
argv = sys.argv[1:]
if argv[:4] == ["-m", "shared", "runs", "wait"]:
    with open(here / "calls.jsonl", "a") as log:
        log.write(json.dumps({{"tool": "python", "argv": argv, "cwd": os.getcwd(), "env": {{}}}}) + "\\n")
    count = here / "waits"
    n = int(count.read_text()) + 1 if count.exists() else 1
    count.write_text(str(n))
    from shared.services import Services
    services = Services.from_env(dict(os.environ))
    data = Path("images.txt").read_bytes()
    if n == 1:
        services.store.put_bytes(services.settings.manifests_container, "images.txt", data)
    if n == int(os.environ.get("FINAL_ON_WAIT", "0")):
        from shared.cli.runs import uploaded
        from shared.handlers.runs.start import claim_blob
        digest = hashlib.sha256(data).hexdigest()
        container, run_id = services.settings.outcomes_container, "pipeline-" + digest[:12]
        record = {{"run_id": run_id, "status": os.environ["FINAL"]}}
        services.store.put_json(container, f"runs/{{run_id}}.json", record)
        upload, lock_upload = uploaded(services, "images.txt", data)
        services.store.put_json(container, claim_blob("images.txt", upload, lock_upload), {{"run_id": run_id}})
    argv[argv.index("--timeout") + 1] = "0.5"
os.execv(sys.executable, [sys.executable, *argv])
'''


def github_follow_script() -> str:
    [step] = [s for s in load(GITHUB)["jobs"]["import"]["steps"] if s.get("name") == "Follow the run to its end"]
    return step["run"]


def devops_import_script(job_timeout_minutes: int) -> str:
    """The import task's inline script as Azure DevOps runs it: template parameters and $(variable) macros
    replaced."""
    [stage] = [s for s in load(DEVOPS)["stages"] if s["stage"] == "import"]
    [task] = [t for t in stage["jobs"][0]["steps"] if str(t.get("task", "")).startswith("AzureCLI@")]
    script = task["inputs"]["inlineScript"].replace("${{ parameters.jobTimeoutInMinutes }}", str(job_timeout_minutes))
    macros = {"AZURE_STORAGE_ACCOUNT_NAME": "stairlock", "MANIFESTS_CONTAINER": "manifests"}
    script = re.sub(r"\$\(([A-Za-z_][\w.]*)\)", lambda m: macros[m.group(1)], script)
    assert "${{" not in script
    return script


def follow(tmp_path, stack, script: str, shell: list[str], env: dict, curl_answer: str) -> tuple[Shims, object]:
    work = tmp_path / "work"
    work.mkdir(parents=True)
    (work / "images.txt").write_text(f"# {tmp_path.name}\nlibrary/busybox:1.36 => pipeline/busybox\n")  # own sha256
    (work / "follow.sh").write_text(script)
    shims = Shims.create(tmp_path / "bin", ["az", "curl"], [
        {"tool": "curl", "responses": [{"stdout": curl_answer}]}])
    wrapper = shims.folder / "python"
    wrapper.write_text(PYTHON_WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    values = {**stack.env, "PYTHONPATH": str(ROOT), **env}
    done = shims.run([*shell, "follow.sh"], shims.env(**values), work, timeout=180)
    return shims, done


def sign_ins_and_waits(shims: Shims) -> list[str]:
    """The order of sign-ins and waits: ["login", "wait", "login", "wait", ...]."""
    order = []
    for call in shims.calls():
        if call["tool"] == "az" and call["argv"][:1] == ["login"]:
            order.append("login")
        elif call["tool"] == "python":
            order.append("wait")
    return order


def logins(shims: Shims) -> list[list[str]]:
    return [c["argv"] for c in shims.calls("az") if c["argv"][:1] == ["login"]]


GITHUB_SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]  # GitHub's `shell: bash` for run steps


def github_env(tmp_path, **extra) -> dict:
    return {"ACTIONS_ID_TOKEN_REQUEST_URL": "https://pipelines.invalid/idtoken?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "job-request-token", "OIDC_CLIENT_ID": "client-1",
            "OIDC_TENANT_ID": "tenant-1", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), **extra}


def test_github_follows_a_long_run_signing_in_afresh_before_each_wait(tmp_path, stack):
    shims, done = follow(tmp_path, stack, github_follow_script(), GITHUB_SHELL,
                         github_env(tmp_path, FINAL_ON_WAIT="3", FINAL="succeeded"), '{"value": "gh-oidc-{n}"}')
    assert done.returncode == 0, done.stderr
    assert sign_ins_and_waits(shims) == ["login", "wait"] * 3
    # each sign-in with a token of its own, fetched for Entra ID's audience, and masked in the log
    assert [argv[argv.index("--federated-token") + 1] for argv in logins(shims)] == ["gh-oidc-1", "gh-oidc-2",
                                                                                     "gh-oidc-3"]
    assert all(argv[argv.index("--username") + 1] == "client-1" for argv in logins(shims))
    for call in shims.calls("curl"):
        assert call["argv"][-1].endswith("&audience=api://AzureADTokenExchange")
        assert "Authorization: bearer job-request-token" in call["argv"]
    for n in (1, 2, 3):
        assert f"::add-mask::gh-oidc-{n}" in done.stdout
    # each wait stays within the federated token's lifetime
    for call in shims.calls("python"):
        assert parse(call["argv"][2:]).timeout < OIDC_TOKEN_LIFETIME
    summary = (tmp_path / "summary.md").read_text()
    assert "succeeded" in summary and summary.startswith("## Import run")


def test_github_stops_at_a_failed_run_or_an_error_without_waiting_again(tmp_path, stack):
    shims, done = follow(tmp_path / "failed", stack, github_follow_script(), GITHUB_SHELL,
                         github_env(tmp_path / "failed", FINAL_ON_WAIT="1", FINAL="failed"), '{"value": "t{n}"}')
    assert done.returncode == 1 and sign_ins_and_waits(shims) == ["login", "wait"]
    assert "failed" in (tmp_path / "failed" / "summary.md").read_text()
    # an error that is not "no finished run within --timeout" (here a setting missing) is not waited out
    shims, done = follow(tmp_path / "error", stack, github_follow_script(), GITHUB_SHELL,
                         github_env(tmp_path / "error", ACR_NAME=""), '{"value": "t{n}"}')
    assert done.returncode != 0 and sign_ins_and_waits(shims) == ["login", "wait"]
    assert "ACR_NAME" in (tmp_path / "error" / "summary.md").read_text()


def devops_env(**extra) -> dict:
    # what AzureCLI@2 sets for a workload identity federation connection, and the job's own variables
    return {"AZURESUBSCRIPTION_SERVICE_CONNECTION_ID": "sc-42", "AZURESUBSCRIPTION_CLIENT_ID": "client-2",
            "AZURESUBSCRIPTION_TENANT_ID": "tenant-2", "SYSTEM_ACCESSTOKEN": "job-access-token",
            "SYSTEM_OIDCREQUESTURI": "https://dev.invalid/org/_apis/distributedtask/hubs/build/plans/p/jobs/j/oidctoken",
            **extra}


def test_azure_devops_follows_a_long_run_signing_in_afresh_before_each_wait(tmp_path, stack):
    shims, done = follow(tmp_path, stack, devops_import_script(60), ["bash"],
                         devops_env(FINAL_ON_WAIT="2", FINAL="succeeded"), '{"oidcToken": "ado-oidc-{n}"}')
    assert done.returncode == 0, done.stderr
    upload, *rest = shims.calls("az")
    assert upload["argv"][:3] == ["storage", "blob", "upload"] and "--auth-mode" in upload["argv"]
    assert sign_ins_and_waits(shims) == ["login", "wait"] * 2
    assert [argv[argv.index("--federated-token") + 1] for argv in logins(shims)] == ["ado-oidc-1", "ado-oidc-2"]
    for call in shims.calls("curl"):
        argv = call["argv"]
        assert argv[-1] == devops_env()["SYSTEM_OIDCREQUESTURI"] + "?api-version=7.1&serviceConnectionId=sc-42"
        assert "Authorization: Bearer job-access-token" in argv and argv[argv.index("-X") + 1] == "POST"
    for n in (1, 2):
        assert f"##vso[task.setsecret]ado-oidc-{n}" in done.stdout
    for call in shims.calls("python"):
        assert parse(call["argv"][2:]).timeout < OIDC_TOKEN_LIFETIME
    assert "succeeded" in done.stdout


def test_azure_devops_gives_up_within_the_jobs_time_limit(tmp_path, stack):
    """The run is followed until the job's limit less 15 minutes: with a 15-minute job, one wait only."""
    shims, done = follow(tmp_path, stack, devops_import_script(15), ["bash"], devops_env(), '{"oidcToken": "t{n}"}')
    assert done.returncode == 1
    assert sign_ins_and_waits(shims) == ["login", "wait"]
    assert "has not finished within this job's time" in done.stderr


def test_azure_devops_pool_and_time_limit_are_parameters():
    """A hosted image is the default; the seed deployment runs the pipeline on a pool inside its VNet. A
    Microsoft-hosted job of a private project's free tier runs 60 minutes at most."""
    pipeline = load(DEVOPS)
    parameters = {p["name"]: p for p in pipeline["parameters"]}
    assert parameters["pool"]["type"] == "object" and parameters["pool"]["default"] == {"vmImage": "ubuntu-latest"}
    assert parameters["jobTimeoutInMinutes"]["type"] == "number" and parameters["jobTimeoutInMinutes"]["default"] <= 60
    jobs = [job for stage in pipeline["stages"] for job in stage["jobs"]]
    assert all(job["pool"] == "${{ parameters.pool }}" for job in jobs)
    assert "vmImage" not in DEVOPS.read_text().split("\nstages:", 1)[1]
    [imports] = [job for job in jobs if job["job"] == "import"]
    assert imports["timeoutInMinutes"] == "${{ parameters.jobTimeoutInMinutes }}"


# -- the pull-request checks annotate the lines at fault ------------------------------------------

def check_scripts(path: Path) -> list[str]:
    """The offline pull-request check scripts (manifest check, with its lock) of the plan job / stage."""
    document = load(path)
    if path == GITHUB:
        steps = document["jobs"]["plan"]["steps"]
    else:
        [stage] = [s for s in document["stages"] if s["stage"] == "plan"]
        steps = stage["jobs"][0]["steps"]
    found = [step.get("run") or step.get("script") for step in steps]
    return [s for s in found if s and any(c[:1] in (["manifest"], ["lock"]) for c in commands(s))]


@pytest.mark.parametrize("path, fmt, error", [
    (GITHUB, "github", "::error file=images.txt,line=2,title=invalid-manifest::"),
    (DEVOPS, "azure", "##vso[task.logissue type=error;sourcepath=images.txt;linenumber=2;code=invalid-manifest]"),
], ids=["github", "azure-devops"])
def test_pull_request_checks_annotate_the_lines_at_fault(tmp_path, path, fmt, error):
    scripts_ = check_scripts(path)
    argvs = [argv for script in scripts_ for argv in commands(script)]
    assert [(a[0], a[a.index("--format") + 1]) for a in argvs] == [("manifest", fmt)]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # the venv's, as `python`
    (bin_dir / "python").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}

    def run(script: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)

    (tmp_path / "images.txt").write_text("nginx:1.27 => web/nginx\nquay.io/Bad/Ref:1\n")
    [manifest_step] = scripts_
    done = run(manifest_step)
    assert done.returncode == 1 and done.stdout.startswith(error), done.stdout + done.stderr
    (tmp_path / "images.txt").write_text("nginx:1.27 => web/nginx\n")
    assert run(manifest_step).returncode == 0  # no images.lock: valid, with a warning
    (tmp_path / "images.lock").write_text("version: 1\nmanifest: \"sha256:" + "0" * 64 + "\"\nimages: []\n")
    done = run(manifest_step)  # a lock that does not agree: annotated, on the manifest's line 1
    at_line_1 = "line=1" in done.stdout.replace("linenumber=", "line=")
    assert done.returncode == 1 and "unlocked" in done.stdout and at_line_1, done.stdout
