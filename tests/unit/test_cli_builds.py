"""The build command's flags -> JSON request, flag names in errors, context packing (no network)."""
import argparse
import io
import tarfile

import pytest

from shared.adapters.tasks import _repository_of, _utf8_prefix
from shared.cli.builds import add_build_arguments, flag_for, pack_context, request_from_args
from shared.core.builds import parse_build
from shared.errors import ValidationError


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_build_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_make_the_api_request():
    args = parse("--source", "https://git.example.com/a.git#main", "--image", "apps/web:{{.Run.ID}}",
                 "--image", "apps/web:latest", "--arg", "A=1", "--arg", "B=x=y", "--secret-arg", "TOKEN=t0k",
                 "--platform", "linux/arm64/v8", "--target", "runtime", "--timeout", "600", "--no-cache",
                 "--pool", "vnetpool")
    data = request_from_args(args, {})
    assert data == {"source_location": "https://git.example.com/a.git#main", "platform": "linux/arm64/v8",
                    "target": "runtime", "timeout": 600, "agent_pool": "vnetpool", "no_cache": True,
                    "image_names": ["apps/web:{{.Run.ID}}", "apps/web:latest"],
                    "arguments": {"A": "1", "B": "x=y", "TOKEN": {"value": "t0k", "secret": True}}}
    spec = parse_build(data)
    assert "t0k" not in repr(spec) and spec.secrets() == ("t0k",)


def test_task_run_flags_and_defaults_left_out():
    data = request_from_args(parse("--task", "build-api", "--arg", "V=2"), {})
    assert data == {"task": "build-api", "arguments": {"V": "2"}}
    assert parse_build(data).kind == "task"


def test_secret_from_the_environment_and_argument_errors():
    data = request_from_args(parse("--secret-arg", "NPM_TOKEN"), {"NPM_TOKEN": "from-env"})
    assert data["arguments"] == {"NPM_TOKEN": {"value": "from-env", "secret": True}}
    with pytest.raises(ValidationError) as info:
        request_from_args(parse("--arg", "X", "--secret-arg", "MISSING", "--arg", "A=1", "--secret-arg", "A=2"), {})
    messages = [(p.field, p.message) for p in info.value.problems]
    assert messages == [("--arg", "'X': expected NAME=VALUE"),
                        ("--secret-arg", "MISSING: no '=VALUE' and no environment variable MISSING"),
                        ("--secret-arg", "argument A is given twice")]
    assert "2" not in str(info.value)  # values are not echoed


@pytest.mark.parametrize("pointer, flag", [
    ("/image_names/0", "--image #1"), ("/image_names", "--image"), ("/arguments/TOKEN", "--arg/--secret-arg TOKEN"),
    ("/agent_pool", "--pool"), ("/source_location", "--source"), ("/push", "--no-push"), ("", "request"),
    ("--arg", "--arg"),
])
def test_flag_for(pointer, flag):
    assert flag_for(pointer) == flag


def test_pack_context_leaves_out_git(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref\n")
    with tarfile.open(fileobj=io.BytesIO(pack_context(tmp_path)), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["Dockerfile", "src", "src/main.py"]
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(b"already packed")
    assert pack_context(archive) == b"already packed"


@pytest.mark.parametrize("name, repository", [
    ("apps/web:{{.Run.ID}}", "apps/web"), ("{{.Run.Registry}}/apps/web:v1", "apps/web"),
    ("myacr.azurecr.io/team/api:1", "team/api"), ("localhost:5000/x:1", "x"), ("$Registry/y:z", "y"),
    ("plain", "plain"),
])
def test_repository_of_a_task_image_name(name, repository):
    assert _repository_of(name) == repository


@pytest.mark.parametrize("data, length", [
    (b"", 0), (b"abc", 3), ("é".encode(), 2), ("é".encode()[:1], 0), (b"ab" + "€".encode()[:2], 2),
    (b"a" + "😀".encode(), 5), (b"a" + "😀".encode()[:3], 1),
])
def test_log_text_never_ends_inside_a_character(data, length):
    assert _utf8_prefix(data) == length
