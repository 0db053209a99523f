"""Every documented mistake on the command line: a one-line message, the documented exit code
(0 ok, 1 the work failed, 2 usage or configuration), never a traceback. No stand-in needed: the
"unreachable storage" case points at a closed port on 127.0.0.1."""
from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli import main
from shared.cli.output import LineProgress
from shared.redact import RedactingFilter, install, redact

ROOT = Path(__file__).resolve().parents[2]
SAS = "https://acct.blob.core.windows.net/logs/run.txt?sv=2024-01-01&sr=b&sp=r&sig=S3cr3tSig%2Bx%3D"


def run(*argv: str, env: dict | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update({k: v for k, v in saved.items() if k in ("PATH", "HOME")})
        os.environ.update(env or {})
        code = main(list(argv), out=out, err=err)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def manifest(tmp_path) -> Path:
    path = tmp_path / "images.txt"
    path.write_text("nginx:1.27\n")
    return path


def storage_env(port: int, **extra) -> dict:
    return {"AZURE_SUBSCRIPTION_ID": "sub", "ACR_RESOURCE_GROUP": "rg", "ACR_NAME": "reg",
            "AzureWebJobsStorage": ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
                                    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBe"
                                    f"ksoGMGw==;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"), **extra}


@pytest.mark.parametrize("argv, code, message", [
    ([], 2, "the following arguments are required: COMMAND"),
    (["nope"], 2, "invalid choice: 'nope'"),
    (["manifest"], 2, "the following arguments are required: manifest_command"),
    (["manifest", "check"], 2, "the following arguments are required: file"),
    (["sync", "x.txt", "--concurrency", "0"], 2, "argument --concurrency: must be from 1 to 64, got 0"),
    (["sync", "x.txt", "--concurrency", "-3"], 2, "argument --concurrency: must be from 1 to 64, got -3"),
    (["sync", "x.txt", "--concurrency", "lots"], 2, "argument --concurrency: expected a whole number, got 'lots'"),
    (["sync", "x.txt", "--concurrency", "2.5"], 2, "argument --concurrency: expected a whole number, got '2.5'"),
    (["pool", "scale", "p1", "-1"], 2, "argument count: must be from 0 to 100, got -1"),
    (["pool", "scale", "p1", "many"], 2, "argument count: expected a whole number, got 'many'"),
    (["serve", "--port", "0"], 2, "argument --port: must be from 1 to 65535, got 0"),
    (["build", "--wait", "--poll", "0"], 2, "argument --poll: must be more than 0 and at most 300 seconds, got 0"),
    (["build", "--wait", "--poll", "-1"], 2, "argument --poll: must be more than 0"),
    (["build", "--wait", "--wait-timeout", "nan"], 2, "argument --wait-timeout: must be more than 0"),
    (["build", "--wait", "--wait-timeout", "soon"], 2, "argument --wait-timeout: expected a number of seconds"),
    (["build", "--timeout", "x"], 2, "argument --timeout: invalid int value: 'x'"),
    (["plan", "x.txt", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["sync"], 2, "give a manifest FILE, or --resume RUN_ID (not both)"),
    (["sync", "x.txt", "--resume", "r1"], 2, "give a manifest FILE, or --resume RUN_ID (not both)"),
    (["sync", "--resume", "r1", "--no-record"], 2, "cannot be combined with --no-record"),
])
def test_usage_errors_exit_2_with_usage_and_message(argv, code, message):
    got, out, err = run(*argv)
    assert (got, out) == (code, "")
    assert err.startswith("usage: airlock") and message in err
    assert "Traceback" not in err


def test_help_exits_0(capsys):
    code, _, _ = run("--help")
    assert code == 0 and "exit codes: 0 ok, 1 the work failed" in capsys.readouterr().out


def test_files_that_are_not_there_or_not_files(tmp_path, manifest):
    assert run("manifest", "check", str(tmp_path)) == (2, "", f"error: {tmp_path}: is a directory, not a file\n")
    missing = tmp_path / "nope.txt"
    assert run("manifest", "check", str(missing)) == (2, "", f"error: {missing}: no such file\n")
    assert run("--env-file", str(missing), "manifest", "check", str(manifest)) == (
        2, "", f"error: --env-file {missing}: no such file\n")
    assert run("manifest", "check", str(manifest), "--env-file", str(tmp_path)) == (
        2, "", f"error: --env-file {tmp_path}: is a directory, not a file\n")


@pytest.mark.parametrize("text, message", [
    ("GOOD=1\nthis line has no equals sign\n", ":2: expected KEY=VALUE"),
    ("=value\n", ":1: expected KEY=VALUE"),
    (b"A=\xff\xfe\n", "not a UTF-8 text file"),
])
def test_bad_env_file_exits_2_with_line(tmp_path, manifest, text, message):
    env = tmp_path / "bad.env"
    env.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, out, err = run("manifest", "check", str(manifest), "--env-file", str(env))
    assert code == 2 and out == "" and err.startswith(f"error: {env}") and message in err


def test_bad_settings_exit_2_naming_the_setting(manifest):
    code, _, err = run("sync", str(manifest), env={**storage_env(closed_port()), "SYNC_CONCURRENCY": "many"})
    assert code == 2 and "SYNC_CONCURRENCY: must be a whole number, got 'many'" in err
    code, _, err = run("plan", str(manifest))  # the command line needs the registry's name, nothing else
    assert (code, err) == (2, "error: ACR_NAME: is required: name the registry with --registry NAME "
                              "(or set ACR_NAME)\n")


def test_missing_ca_bundle_is_named(manifest, tmp_path):
    bundle = tmp_path / "no-such-ca.pem"
    code, out, err = run("plan", str(manifest), env={**storage_env(closed_port()), "REQUESTS_CA_BUNDLE": str(bundle)})
    assert (code, out) == (2, "") and f"REQUESTS_CA_BUNDLE: {bundle}: no such file" in err


def test_unreachable_storage_is_one_line_exit_1():
    port = closed_port()
    code, out, err = run("runs", "show", "abc", env=storage_env(port))
    assert (code, out) == (1, "")
    assert err == f"error: Unreachable: cannot reach storage (blobs) at http://127.0.0.1:{port}: connection refused\n"


def test_an_invalid_manifest_exits_1(tmp_path):
    bad = tmp_path / "images.txt"
    bad.write_text("nginx:1.27\nNginx:1.27\n")
    code, out, _ = run("manifest", "check", str(bad))
    assert code == 1 and f"{bad}:2:" in out


def test_global_flags_before_or_after_the_subcommand(manifest, tmp_path):
    env = tmp_path / "settings.env"
    env.write_text("SOURCE_REGISTRY_ALLOWLIST=quay.io\n")
    for argv in (["--json", "--env-file", str(env), "manifest", "check", str(manifest)],
                 ["manifest", "check", str(manifest), "--json", "--env-file", str(env)],
                 ["manifest", "--json", "check", str(manifest), "-v", "--env-file", str(env)]):
        code, out, _ = run(*argv)
        # the env file applied (docker.io not allowed) and the output is JSON, wherever the flags were
        assert code == 1 and '"registry \'docker.io\' is not on the allowed list' not in out
        assert out.lstrip().startswith("{") and "not on the allowed list" in out, argv


def test_subcommands_added_elsewhere_get_the_global_flags():
    from shared.cli.args import CliParser

    parser = CliParser(prog="python -m shared")
    sub = parser.add_subparsers(dest="command", required=True)
    extra = sub.add_parser("extra")
    extra.add_argument("--json", action="store_true")  # declared again: the global one stays
    extra.add_argument("--since")
    args = parser.parse_args(["--json", "extra", "-q", "--since", "24h"])
    assert (args.json, args.quiet, args.verbose, args.since, args.env_file) == (True, True, 0, "24h", None)
    args = parser.parse_args(["extra", "-vv"])
    assert (args.json, args.quiet, args.verbose) == (False, False, 2)


def test_no_traceback_from_a_real_process_outside_the_repo(tmp_path):
    """Run as pipelines do: a separate process, another working directory, stderr not a terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE", "ACR_"))}
    env["PYTHONPATH"] = str(ROOT)
    for argv, code in ((["manifest", "check", str(tmp_path)], 2), (["sync", "x", "--concurrency", "0"], 2),
                       (["frobnicate"], 2)):
        result = subprocess.run([sys.executable, "-m", "shared", *argv], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == code and "Traceback" not in result.stderr and result.stderr.strip()


# -- progress ----------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Outcome:
    pass


def test_line_progress_prints_every_interval_or_step_and_the_end():
    stream, clock = io.StringIO(), FakeClock()
    progress = LineProgress(stream, interval=30, step=25, clock=clock)
    for done in range(1, 11):
        progress("planned", done, 10, None)
    for done in range(1, 101):
        clock.now += 0.1
        if done == 50:
            clock.now += 60  # a slow import: the interval passes
        progress("failed" if done in (3, 70) else "imported", done, 100, Outcome())
    lines = stream.getvalue().splitlines()
    assert lines == ["progress: planned 10 entries",
                     "progress: imports 25/100 done (25%), 1 failed",
                     "progress: imports 50/100 done (50%), 1 failed",
                     "progress: imports 75/100 done (75%), 2 failed",
                     "progress: imports 100/100 done (100%), 2 failed"]


def test_line_progress_by_time_when_steps_are_slow():
    stream, clock = io.StringIO(), FakeClock()
    progress = LineProgress(stream, interval=10, step=50, clock=clock)
    for done in range(1, 5):
        clock.now += 11
        progress("imported", done, 1000, Outcome())
    assert len(stream.getvalue().splitlines()) == 4


# -- redaction ---------------------------------------------------------------------------------

def test_redact_replaces_signatures_and_function_keys():
    assert redact(SAS) == SAS.replace("S3cr3tSig%2Bx%3D", "REDACTED")
    assert redact("GET /api/runs/x?code=k3y&wait=1") == "GET /api/runs/x?code=REDACTED&wait=1"
    assert redact("{'x-functions-key': 'k3y'}") == "{'x-functions-key': 'REDACTED'}"
    assert redact("error code=InvalidManifest") == "error code=InvalidManifest"


def test_filter_on_the_root_handler_covers_third_party_loggers_at_debug():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    try:
        install(root)
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.DEBUG)
        root.setLevel(logging.DEBUG)
        logging.getLogger("urllib3.connectionpool").debug('%s://%s:%s "%s %s %s" %s %s', "https", "acct", 443,
                                                          "GET", SAS.split(".net", 1)[1], "HTTP/1.1", 200, 12)
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: %r", SAS)
        try:
            raise RuntimeError(f"failed to read {SAS}")
        except RuntimeError:
            logging.getLogger("shared.x").exception("reading the log")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = stream.getvalue()
    assert "S3cr3tSig" not in text and text.count("sig=REDACTED") == 3, text


# -- version, program name, logging ------------------------------------------------------------

def test_version_is_the_pyprojects():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert run("--version") == (0, f"acr-airlock {version}\n", "")
    assert run("plan", "--version")[0] == 2  # a top-level flag only


def test_usage_and_hints_name_the_command_that_was_run(tmp_path):
    """``airlock`` (the entry point's default) in-process; ``python -m shared`` when run as the module."""
    assert run("runs")[2].startswith("usage: airlock runs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE", "ACR_"))}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-m", "shared", "runs"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("usage: python -m shared runs")


def _log_all(argv: list[str]) -> str:
    """Configure the CLI's logging as ``argv`` says, then log one record of each kind; what reached stderr."""
    from shared.cli.dispatch import _configure_logging, build_parser
    from shared.telemetry import ALERT_ATTRIBUTE

    err = io.StringIO()
    root = logging.getLogger()
    saved = root.level, {n: logging.getLogger(n).level for n in ("azure", "urllib3")}
    try:
        _configure_logging(build_parser().parse_args([*argv, "manifest", "check", "x"]), err)
        logging.getLogger("shared.handlers.sync").info("app info %s", "sig=S3cr3t")
        logging.getLogger("shared.handlers.sync").warning("app warning")
        logging.getLogger("shared.handlers.sync").debug("app debug")
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: 'https://x'")
        logging.getLogger("azure.identity._credentials.chained").warning("DefaultAzureCredential failed ...")
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTPS connection (1): x:443")
        logging.getLogger("azure.storage").error("library error")
        logging.getLogger("shared.telemetry").error("AIRLOCK_RUN_FAILED run=r1", extra={ALERT_ATTRIBUTE: True})
    finally:
        from shared.cli import dispatch

        root.removeHandler(dispatch._HANDLER)
        dispatch._HANDLER = None
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)
    return err.getvalue()


def test_default_logging_is_warnings_from_the_app_and_errors_from_libraries():
    assert _log_all([]).splitlines() == ["WARNING shared.handlers.sync: app warning",
                                         "ERROR azure.storage: library error"]
    assert _log_all(["-q"]).splitlines() == ["ERROR azure.storage: library error"]


def test_v_is_the_apps_info_and_vv_adds_the_sdks_wire_logs():
    lines = _log_all(["-v"]).splitlines()
    assert lines == ["INFO shared.handlers.sync: app info sig=REDACTED", "WARNING shared.handlers.sync: app warning",
                     "ERROR azure.storage: library error"]
    debug = _log_all(["-vv"])
    for text in ("app debug", "Request URL", "DefaultAzureCredential failed", "Starting new HTTPS connection"):
        assert text in debug
    assert "AIRLOCK_RUN_FAILED" not in debug  # the alert line is for telemetry, at every level


def test_log_format_json_is_one_object_per_line():
    import json

    lines = [json.loads(line) for line in _log_all(["-v", "--log-format", "json"]).splitlines()]
    assert [(d["level"], d["logger"], d["message"]) for d in lines] == [
        ("INFO", "shared.handlers.sync", "app info sig=REDACTED"), ("WARNING", "shared.handlers.sync", "app warning"),
        ("ERROR", "azure.storage", "library error")]
    assert all(d["time"].endswith("+00:00") for d in lines)
    assert run("--log-format", "xml", "manifest", "check", "x")[0] == 2


def test_the_alert_line_still_reaches_telemetry_handlers():
    """The terminal leaves it out; a handler on the ``shared`` logger (where the Azure Monitor exporter sits)
    still gets it."""
    from shared.telemetry import RunContext, report_run

    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    keep = Keep(level=logging.WARNING)
    logging.getLogger("shared").addHandler(keep)
    try:
        report_run(RunContext("r-alert", manifest="images.txt", trigger="cli", kind="sync"),
                   {"status": "failed", "summary": {"total": 1, "failed": 1}})
    finally:
        logging.getLogger("shared").removeHandler(keep)
    assert [r.getMessage().split()[0:2] for r in seen] == [["AIRLOCK_RUN_FAILED", "run=r-alert"]]


def test_a_closed_pipe_is_not_a_network_error(tmp_path):
    """``airlock manifest check --json | head -c 100``: the reader goes away; no 'cannot reach', no traceback."""
    manifest = tmp_path / "images.txt"
    manifest.write_text("".join(f"quay.io/team/app{i}:1.{i} => team/app{i}\n" for i in range(3000)))  # ~1 MB of JSON
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE", "ACR_"))}
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen([sys.executable, "-m", "shared", "manifest", "check", str(manifest), "--json"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.read(100).startswith(b"{")
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141 and stderr == ""
