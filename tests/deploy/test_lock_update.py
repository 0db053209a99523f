"""The scheduled lock update (.github/workflows/lock-update.yml, pipelines/lock-update.yml), read as YAML and run.

Static: the schedule, the permissions, a fixed branch, and every command line of ours parsed by the CLI's own
parser. Run: each pipeline's script runs in a real git checkout whose `origin` is a local bare repository, with
the real `airlock lock images.txt --update` against the local stand-in's upstream registry, and stand-ins for
`gh` / `az` (tests/deploy/shims.py). A tag moved upstream makes a commit of images.lock alone on the fixed
branch and a pull request whose body lists the digest change; a rerun updates that pull request (the branch is
rewritten, not stacked); nothing changed opens nothing (and closes or abandons a pull request still open); a
line that cannot be resolved fails and changes nothing.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from devstack import oci
from tests.deploy.shims import Shims, option
from tests.deploy.test_pipelines import GITHUB_SHELL, commands, load, parse, scripts

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github" / "workflows" / "lock-update.yml"
DEVOPS = ROOT / "pipelines" / "lock-update.yml"
BRANCH = "airlock/lock-update"
sys.path.insert(0, str(ROOT / "scripts"))
import lock_pr_body  # noqa: E402


# -- static -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [GITHUB, DEVOPS], ids=["github", "azure-devops"])
def test_the_job_runs_lock_update_on_images_txt(path):
    argvs = [argv for script in scripts(load(path)) for argv in commands(script)]
    parsed = [parse(argv) for argv in argvs]
    assert [(p.command, p.file, p.update) for p in parsed] == [("lock", "images.txt", True)]


def test_github_runs_on_a_schedule_and_on_demand_with_write_permissions_only_for_the_pull_request():
    workflow = load(GITHUB)
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    [schedule] = on["schedule"]
    assert len(schedule["cron"].split()) == 5
    assert "workflow_dispatch" in on and set(on) == {"schedule", "workflow_dispatch"}
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "write"}  # no id-token: no Azure
    [job] = workflow["jobs"].values()
    [step] = [s for s in job["steps"] if "airlock lock" in s.get("run", "")]
    assert step["env"]["BRANCH"] == BRANCH
    assert step["env"]["GH_TOKEN"] == "${{ secrets.LOCK_UPDATE_TOKEN || github.token }}"
    [checkout] = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout["with"]["token"] == step["env"]["GH_TOKEN"]  # the push and the pull request: one identity
    install = [s["run"] for s in job["steps"] if "pip install" in s.get("run", "")]
    assert install == ["python -m pip install --disable-pip-version-check ."]


def test_azure_devops_runs_on_a_schedule_even_without_new_commits():
    pipeline = load(DEVOPS)
    assert pipeline["trigger"] == "none" and pipeline["pr"] == "none"
    [schedule] = pipeline["schedules"]
    assert len(schedule["cron"].split()) == 5 and schedule["branches"]["include"] == ["main"]
    assert schedule["always"] is True  # otherwise a schedule runs only after a new commit, and tags move without
    variables = {v["name"]: v["value"] for v in pipeline["variables"] if "name" in v}
    assert variables["lockBranch"] == BRANCH
    [job] = pipeline["jobs"]
    assert job["pool"] == "${{ parameters.pool }}"
    [checkout] = [s for s in job["steps"] if "checkout" in s]
    assert checkout["persistCredentials"] is True
    [step] = [s for s in job["steps"] if "airlock lock" in s.get("script", "")]
    assert step["env"]["AZURE_DEVOPS_EXT_PAT"] == "$(System.AccessToken)"
    assert step["env"]["LOCK_BRANCH"] == "$(lockBranch)"


def test_the_deployment_guide_says_how_to_enable_both():
    text = (ROOT / "docs" / "deployment.md").read_text()
    section = text.split("### Scheduled lock update", 1)[1].split("\n## ", 1)[0]
    for needle in (".github/workflows/lock-update.yml", "pipelines/lock-update.yml", "LOCK_UPDATE_TOKEN",
                   "Force push", "Contribute to pull requests", "create and approve pull requests", BRANCH):
        assert needle in section, needle


# -- the pull request body --------------------------------------------------------------------------

OUTPUT = ("+ team/new:1  sha256:" + "a" * 64 + "  (docker.io/library/new:1)\n"
          "- team/gone:2  sha256:" + "b" * 64 + "\n"
          "~ team/app:stable  sha256:" + "c" * 64 + " -> sha256:" + "d" * 64 + "\n"
          "images.lock: 2 images (3 resolved, 0 kept); 1 added, 1 changed, 1 removed\n")


def test_the_body_lists_every_change_and_the_summary():
    body = lock_pr_body.render(OUTPUT, 60000)
    for line in OUTPUT.splitlines():
        assert line in body
    assert body.index("+ team/new:1") < body.index("images.lock: 2 images")


def test_a_body_over_the_limit_counts_what_it_leaves_out():
    many = "".join(f"~ team/app{i}:1  sha256:{'c' * 64} -> sha256:{'d' * 64}\n" for i in range(100)) + "summary\n"
    body = lock_pr_body.render(many, 3900)
    assert len(body) <= 3900
    shown = body.count("~ team/app")
    assert 10 < shown < 100 and f"... and {100 - shown} more (see the diff of images.lock)" in body


# -- running the scripts ----------------------------------------------------------------------------

def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


class Repo:
    """A bare `origin` holding main with images.txt and its images.lock, and fresh clones of it (one per job run,
    as a pipeline checks main out afresh each time). images.txt names a docker.io tag this test moves upstream
    (the stand-in mirrors docker.io to its upstream registry)."""

    def __init__(self, tmp_path: Path, stack):
        self.tmp, self.stack = tmp_path, stack
        self.name = f"lockupd{uuid.uuid4().hex[:8]}"
        self.origin = tmp_path / "origin.git"
        subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(self.origin)], check=True)
        self.first = self.move("one")
        seed = tmp_path / "seed"
        git("clone", "--quiet", str(self.origin), str(seed), cwd=tmp_path)
        (seed / "images.txt").write_text(f"docker.io/library/{self.name}:stable => team/{self.name}\n"
                                         "library/busybox:1.36 => team/busybox\n")
        done = subprocess.run([sys.executable, "-m", "shared", "lock", "images.txt"], cwd=seed, env=self.env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        git("add", "images.txt", "images.lock", cwd=seed)
        git("commit", "--quiet", "-m", "images.txt and its lock", cwd=seed)
        git("push", "--quiet", "origin", "main", cwd=seed)
        self.runs = 0

    def env(self, **extra: str) -> dict:
        import os

        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        return {**keep, **self.stack.env, "PYTHONPATH": str(ROOT), "SOURCE_REGISTRY_ALLOWLIST": "", **extra}

    def move(self, seed: str) -> str:
        """Point the upstream tag at the image built from ``seed``; its digest."""
        layout = oci.build_image(f"library/{self.name}", seed=seed)
        return oci.push(layout, f"{self.stack.upstream_host}/library/{self.name}:stable", cert_dir=self.stack.certs_dir)

    def checkout(self) -> Path:
        self.runs += 1
        work = self.tmp / f"run{self.runs}"
        git("clone", "--quiet", str(self.origin), str(work), cwd=self.tmp)
        (work / "scripts").mkdir()
        (work / "scripts" / "lock_pr_body.py").write_text((ROOT / "scripts" / "lock_pr_body.py").read_text())
        return work

    def on_branch(self, path: str = "images.lock") -> str:
        return git("show", f"{BRANCH}:{path}", cwd=self.origin)

    def branches(self) -> list[str]:
        return git("branch", "--format=%(refname:short)", cwd=self.origin).split()


def run_script(repo: Repo, script: str, shell: list[str], tool: str, answers: list[dict], env: dict):
    """One job run: a fresh checkout, the script with `airlock` (the installed command line), `python` and a
    stand-in for ``tool`` on PATH."""
    work = repo.checkout()
    shims = Shims.create(repo.tmp / f"bin{repo.runs}", [tool], answers)
    for name, body in (("airlock", f'#!/bin/sh\nexec "{sys.executable}" -m shared "$@"\n'),
                       ("python", f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')):
        (shims.folder / name).write_text(body)
        (shims.folder / name).chmod(0o755)
    (work / "job.sh").write_text(script)
    values = {**repo.stack.env, "PYTHONPATH": str(ROOT), "SOURCE_REGISTRY_ALLOWLIST": "", **env}
    done = shims.run([*shell, "job.sh"], shims.env(**values), work, timeout=180)
    return shims, done


def github_script() -> str:
    [job] = load(GITHUB)["jobs"].values()
    [step] = [s for s in job["steps"] if "airlock lock" in s.get("run", "")]
    return step["run"]


def github_run(repo: Repo, open_pr: str = ""):
    env = {"BASE": "main", "BRANCH": BRANCH, "GH_TOKEN": "gh-token", "RUNNER_TEMP": str(repo.tmp),
           "DOCKERHUB_USERNAME": "", "DOCKERHUB_TOKEN": "",
           "SOURCE_REGISTRY_MIRRORS": repo.stack.env["SOURCE_REGISTRY_MIRRORS"]}
    return run_script(repo, github_script(), GITHUB_SHELL, "gh",
                      [{"tool": "gh", "prefix": ["pr", "list"], "responses": [{"stdout": open_pr}]}], env)


def gh_calls(shims: Shims) -> list[list[str]]:
    return [c["argv"] for c in shims.calls("gh")]


def test_github_opens_a_pull_request_only_when_the_lock_changed_and_updates_it_on_reruns(tmp_path, stack, seeded):
    repo = Repo(tmp_path, stack)
    locked_on_main = git("show", "main:images.lock", cwd=repo.origin)
    assert repo.first in locked_on_main

    shims, done = github_run(repo)  # nothing moved upstream
    assert done.returncode == 0, done.stderr
    assert "images.lock is up to date: no pull request" in done.stdout
    assert [argv[:2] for argv in gh_calls(shims)] == [["pr", "list"]]
    assert BRANCH not in repo.branches()

    moved = repo.move("two")
    shims, done = github_run(repo)
    assert done.returncode == 0, done.stderr
    listed, created = gh_calls(shims)
    assert listed[:2] == ["pr", "list"] and option(listed, "--head") == BRANCH and option(listed, "--base") == "main"
    assert created[:2] == ["pr", "create"]
    assert option(created, "--head") == BRANCH and option(created, "--base") == "main"
    body = Path(option(created, "--body-file")).read_text()
    assert f"~ team/{repo.name}:stable  {repo.first} -> {moved}" in body
    assert "team/busybox" not in body  # unchanged images are not listed
    assert moved in repo.on_branch() and repo.first not in repo.on_branch()
    assert git("diff", "--name-only", "main", BRANCH, cwd=repo.origin).split() == ["images.lock"]
    assert git("show", "main:images.lock", cwd=repo.origin) == locked_on_main  # main itself untouched

    newer = repo.move("three")  # moved again before the pull request was merged: the same one is updated
    shims, done = github_run(repo, open_pr="7\n")
    assert done.returncode == 0, done.stderr
    [listed, edited] = gh_calls(shims)
    assert edited[:3] == ["pr", "edit", "7"]
    assert f"{repo.first} -> {newer}" in Path(option(edited, "--body-file")).read_text()
    assert git("rev-list", "--count", f"main..{BRANCH}", cwd=repo.origin).strip() == "1"  # rewritten, not stacked
    assert newer in repo.on_branch()

    assert repo.move("one") == repo.first  # back where main's lock has it: the open pull request is closed
    shims, done = github_run(repo, open_pr="7\n")
    assert done.returncode == 0, done.stderr
    [listed, closed] = gh_calls(shims)
    assert closed[:3] == ["pr", "close", "7"] and "--delete-branch" in closed


def test_github_fails_and_changes_nothing_when_a_line_cannot_be_resolved(tmp_path, stack, seeded):
    repo = Repo(tmp_path, stack)
    seed = tmp_path / "edit"
    git("clone", "--quiet", str(repo.origin), str(seed), cwd=tmp_path)
    with open(seed / "images.txt", "a") as manifest:
        manifest.write(f"docker.io/library/{repo.name}:no-such-tag => team/missing\n")
    git("commit", "--quiet", "-am", "a line that does not resolve", cwd=seed)
    git("push", "--quiet", "origin", "main", cwd=seed)
    repo.move("two")
    shims, done = github_run(repo)
    assert done.returncode == 1
    assert "could not be resolved; nothing was written" in done.stderr
    assert gh_calls(shims) == [] and BRANCH not in repo.branches()


def devops_script() -> str:
    [job] = load(DEVOPS)["jobs"]
    [step] = [s for s in job["steps"] if "airlock lock" in s.get("script", "")]
    return step["script"]


def devops_run(repo: Repo, open_pr: str = ""):
    # what the job's env: block gives the script; variables the group does not define arrive as "$(NAME)"
    env = {"AZURE_DEVOPS_EXT_PAT": "job-access-token", "LOCK_BRANCH": BRANCH, "BUILD_SOURCEBRANCH": "refs/heads/main",
           "SYSTEM_COLLECTIONURI": "https://dev.azure.com/contoso/", "SYSTEM_TEAMPROJECT": "platform",
           "BUILD_REPOSITORY_NAME": "images", "AGENT_TEMPDIRECTORY": str(repo.tmp),
           "SOURCE_REGISTRY_ALLOWLIST": "$(SOURCE_REGISTRY_ALLOWLIST)", "DOCKERHUB_USERNAME": "$(DOCKERHUB_USERNAME)",
           "DOCKERHUB_TOKEN": "$(DOCKERHUB_TOKEN)",
           "SOURCE_REGISTRY_MIRRORS": repo.stack.env["SOURCE_REGISTRY_MIRRORS"]}
    return run_script(repo, devops_script(), ["bash"], "az",
                      [{"tool": "az", "prefix": ["repos", "pr", "list"], "responses": [{"stdout": open_pr}]}], env)


def az_calls(shims: Shims) -> list[list[str]]:
    return [c["argv"] for c in shims.calls("az")]


def test_azure_devops_opens_updates_and_abandons_the_pull_request(tmp_path, stack, seeded):
    repo = Repo(tmp_path, stack)
    shims, done = devops_run(repo)
    assert done.returncode == 0, done.stderr  # the "$(NAME)" of undefined variables were dropped
    assert [argv[:3] for argv in az_calls(shims)] == [["repos", "pr", "list"]]
    [listed] = az_calls(shims)
    assert option(listed, "--source-branch") == BRANCH and option(listed, "--target-branch") == "main"
    assert option(listed, "--organization") == "https://dev.azure.com/contoso/"
    assert option(listed, "--status") == "active" and BRANCH not in repo.branches()

    moved = repo.move("two")
    shims, done = devops_run(repo)
    assert done.returncode == 0, done.stderr
    _, created = az_calls(shims)
    assert created[:3] == ["repos", "pr", "create"]
    assert (option(created, "--source-branch"), option(created, "--target-branch")) == (BRANCH, "main")
    assert (option(created, "--project"), option(created, "--repository")) == ("platform", "images")
    description = option(created, "--description")
    assert description.startswith("@")  # the Azure CLI reads an @file argument's value from the file
    text = Path(description[1:]).read_text()
    assert f"~ team/{repo.name}:stable  {repo.first} -> {moved}" in text and len(text) <= 4000
    assert moved in repo.on_branch()

    shims, done = devops_run(repo, open_pr="42\n")
    assert done.returncode == 0, done.stderr
    _, updated = az_calls(shims)
    assert updated[:3] == ["repos", "pr", "update"] and option(updated, "--id") == "42"
    assert option(updated, "--description").startswith("@")
    assert git("rev-list", "--count", f"main..{BRANCH}", cwd=repo.origin).strip() == "1"

    repo.move("one")
    shims, done = devops_run(repo, open_pr="42\n")
    assert done.returncode == 0, done.stderr
    _, abandoned = az_calls(shims)
    assert abandoned[:3] == ["repos", "pr", "update"] and option(abandoned, "--status") == "abandoned"
    assert BRANCH not in repo.branches()  # its branch deleted too


def test_no_secret_reaches_the_command_lines():
    for path in (GITHUB, DEVOPS):
        for script in scripts(load(path)):
            words = shlex.split(script.replace("\\\n", " "), comments=True)
            assert not any("TOKEN" in w and "$" in w for w in words), path.name
