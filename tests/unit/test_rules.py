import json
import textwrap

import pytest

from shared.core.builds import BuildArgument
from shared.core.rules import MAX_CHAIN, Rule, RuleSet, chain_allows, chain_cut, parse_rules
from shared.errors import RuleFileError, ValidationError

GIT = "https://git.example.com/team/web.git#main"
DIGEST = "sha256:" + "ab" * 32
SECRET = "hunter2-very-secret"

EXAMPLE = """\
rules:
  - name: web-on-nginx            # unique, [a-z0-9-]{1,63}
    when:
      repository: library/nginx   # glob (fnmatch) on the pushed repository
      tag: "1.27*"                # optional glob on the pushed tag
    build:
      source_location: https://git.example.com/team/web.git#main
      image_names: ["apps/web:{{.Run.ID}}", "apps/web:latest"]
      agent_pool: vnetpool
    digest_argument: BASE_IMAGE_DIGEST
  - name: api-task
    when: {repository: "base/*"}
    task: {task: build-api, agent_pool: vnetpool}
    outputs: ["apps/api"]
"""


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def problems(text):
    with pytest.raises(RuleFileError) as info:
        parse_rules(text)
    return info.value.problems


def only_problem(text):
    found = problems(text)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def rule(name, when, body, **extra) -> dict:
    item = {"name": name, "when": when, **body, **extra}
    return item


def build(*images, **fields) -> dict:
    return {"build": {"source_location": GIT, "image_names": list(images), **fields}}


def task(name="build-api", **fields) -> dict:
    return {"task": {"task": name, **fields}}


def as_json(*rules) -> str:
    return json.dumps({"rules": list(rules)}, indent=2)


# --- the documented example ------------------------------------------------------------------

def test_example_parses():
    rules = parse_rules(EXAMPLE)
    assert isinstance(rules, RuleSet)
    assert [r.name for r in rules] == ["web-on-nginx", "api-task"]
    web, api = rules.rules
    assert (web.line, web.repository, web.tag, web.kind, web.outputs) == (2, "library/nginx", "1.27*", "docker",
                                                                          ("apps/web",))
    assert web.spec.agent_pool == "vnetpool" and web.digest_argument == "BASE_IMAGE_DIGEST"
    assert (api.line, api.repository, api.tag, api.kind, api.outputs) == (11, "base/*", None, "task", ("apps/api",))
    assert api.spec.task == "build-api"


@pytest.mark.parametrize("repository, tag, names", [
    ("library/nginx", "1.27", ["web-on-nginx"]),
    ("library/nginx", "1.27.3-alpine", ["web-on-nginx"]),
    ("library/nginx", "1.26", []),
    ("library/nginx", None, []),
    ("library/nginx-extra", "1.27", []),
    ("base/python", "3.12", ["api-task"]),
    ("base/python", None, ["api-task"]),
    ("base", "1", []),
    ("Base/python", "1", []),  # case-sensitive
])
def test_matching(repository, tag, names):
    assert [r.name for r in parse_rules(EXAMPLE).matching(repository, tag)] == names


def test_the_same_rules_as_json():
    text = as_json(rule("web-on-nginx", {"repository": "library/nginx", "tag": "1.27*"},
                        build("apps/web:{{.Run.ID}}", "apps/web:latest", agent_pool="vnetpool")),
                   rule("api-task", {"repository": "base/*"}, task(agent_pool="vnetpool"), outputs=["apps/api"]))
    from_json = parse_rules(text).to_dict()
    from_yaml = parse_rules(EXAMPLE).to_dict()
    for d in (from_json, from_yaml):
        del d["content_hash"]
        for r in d["rules"]:
            del r["line"]
    assert from_json == from_yaml


def test_empty_rule_list():
    assert len(parse_rules("rules: []\n")) == 0
    assert parse_rules(b"rules: []\n").matching("a/b", "1") == []


def test_bytes_with_bom():
    assert len(parse_rules(b"\xef\xbb\xbf" + EXAMPLE.encode())) == 2


def test_spec_for_passes_the_digest():
    web = parse_rules(EXAMPLE).rules[0]
    spec = web.spec_for(DIGEST)
    assert spec.argument("BASE_IMAGE_DIGEST") == BuildArgument("BASE_IMAGE_DIGEST", DIGEST)
    assert web.spec.argument("BASE_IMAGE_DIGEST") is None


def test_custom_digest_argument():
    rules = parse_rules(as_json(rule("r", {"repository": "base/x"}, build("apps/x:1"), digest_argument="BASE")))
    assert rules.rules[0].spec_for(DIGEST).argument("BASE").value == DIGEST


def test_to_dict_has_no_secrets():
    text = as_json(rule("r", {"repository": "base/x"},
                        build("apps/x:1", arguments={"TOKEN": {"value": SECRET, "secret": True}})))
    rules = parse_rules(text)
    assert SECRET not in json.dumps(rules.to_dict())
    assert SECRET not in repr(rules)
    assert rules.rules[0].spec.secrets() == (SECRET,)
    assert rules.to_dict()["rules"][0]["build"]["arguments"] == {"TOKEN": {"value": "***", "secret": True}}


def test_content_hash_is_of_the_bytes():
    import hashlib
    assert parse_rules(EXAMPLE).content_hash == hashlib.sha256(EXAMPLE.encode()).hexdigest()


def test_get_by_name():
    rules = parse_rules(EXAMPLE)
    assert rules.get("api-task").kind == "task"
    assert rules.get("nope") is None


def test_rule_without_tag_matches_untagged_pushes_and_with_tag_does_not():
    r = Rule("r", 1, "a/*", None, parse_rules(EXAMPLE).rules[0].spec)
    assert r.matches("a/b", None)
    assert not Rule("r", 1, "a/*", "v*", r.spec).matches("a/b", None)
    assert Rule("r", 1, None, "v*", r.spec).matches("any/thing", "v2")


# --- problems, one per bad input, with line and field ----------------------------------------

BAD = [
    # (file, line, field, fragment)
    ("rules: {}\n", 1, "rules", "must be a list"),
    ("rules:\n", 1, "rules", "must be a list"),
    ("- a\n- b\n", 1, None, "must be a mapping"),
    ("rules: []\nversion: 2\n", 2, "version", "unknown top-level key"),
    ("rules:\n  - just-a-name\n", 2, "rules[0]", "must be a mapping"),
    ("""\
     rules:
       - when: {repository: a/b}
         task: {task: build-api}
     """, 2, "rules[0]", "has no name"),
    ("""\
     rules:
       - name: 7
         when: {repository: a/b}
         task: {task: build-api}
     """, 2, "rules[0].name", "name must be a string, not a number"),
    ("""\
     rules:
       - name: Web_Rule
         when: {repository: a/b}
         task: {task: build-api}
     """, 2, "rules[0].name", "invalid rule name"),
    ("""\
     rules:
       - name: 42
         when: {repository: a/b}
         task: {task: build-api}
     """, 2, "rules[0].name", "must be a string"),
    ("""\
     rules:
       - name: r
         task: {task: build-api}
     """, 2, "rules[0]", "no 'when'"),
    ("""\
     rules:
       - name: r
         when: {}
         task: {task: build-api}
     """, 3, "rules[0].when", "when is empty"),
    ("""\
     rules:
       - name: r
         when: library/nginx
         task: {task: build-api}
     """, 3, "rules[0].when", "must be a mapping"),
    ("""\
     rules:
       - name: r
         when:
           repository: a/b
           branch: main
         task: {task: build-api}
     """, 5, "rules[0].when.branch", "unknown key 'branch'"),
    ("""\
     rules:
       - name: r
         when:
           repository: Library/Nginx
         task: {task: build-api}
     """, 4, "rules[0].when.repository", "lowercase"),
    ("""\
     rules:
       - name: r
         when: {repository: "docker.io/library/*"}
         task: {task: build-api}
     """, 3, "rules[0].when.repository", "registry host"),
    ("""\
     rules:
       - name: r
         when: {repository: "library/nginx:1.27"}
         task: {task: build-api}
     """, 3, "rules[0].when.repository", "use when.tag"),
    ("""\
     rules:
       - name: r
         when: {repository: "a//b"}
         task: {task: build-api}
     """, 3, "rules[0].when.repository", "empty path component"),
    ("""\
     rules:
       - name: r
         when: {repository: "a/b c"}
         task: {task: build-api}
     """, 3, "rules[0].when.repository", "characters"),
    ("""\
     rules:
       - name: r
         when:
           repository: a/b
           tag: 1.27
         task: {task: build-api}
     """, 5, "rules[0].when.tag", "quote it"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b, tag: "-bad"}
         task: {task: build-api}
     """, 3, "rules[0].when.tag", "invalid tag"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b, tag: "v1/2"}
         task: {task: build-api}
     """, 3, "rules[0].when.tag", "characters"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
     """, 2, "rules[0]", "needs a build"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build: {source_location: "source/1/a.tar.gz", image_names: ["x/y:1"]}
         task: {task: build-api}
     """, 5, "rules[0].task", "not both"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         task: {task: build-api}
         on: push
     """, 5, "rules[0].on", "unknown key"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build:
           source_location: https://git.example.com/team/web.git#main
           image_names:
             - apps/web:1
             - apps/web
     """, 8, "rules[0].build.image_names[1]", "explicit tag"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build:
           image_names: [apps/web:1]
     """, 4, "rules[0].build.source_location", "required"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build:
           source_location: https://git.example.com/team/web.git#main
           image_names: [apps/web:1]
           arguments:
             VERSION: 1.2
     """, 8, "rules[0].build.arguments.VERSION", "quote"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build:
           source_location: https://git.example.com/team/web.git#main
           image_names: [apps/web:1]
           arguments:
             TOKEN:
               value: 7
               secret: true
     """, 9, "rules[0].build.arguments.TOKEN.value", "must be a string"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build:
           source_location: https://git.example.com/team/web.git#main
           image_names: [apps/web:1]
           arguments: {"my arg": x}
     """, 7, 'rules[0].build.arguments["my arg"]', "invalid argument name"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build:
           kind: task
           source_location: https://git.example.com/team/web.git#main
           image_names: [apps/web:1]
     """, 5, "rules[0].build.kind", "does not fit"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build:
           source_location: https://git.example.com/team/web.git#main
           image_names: [apps/web:1]
           timeout: 30
     """, 7, "rules[0].build.timeout", "300..28800"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build: "az acr build ."
     """, 4, "rules[0].build", "must be an object"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         task:
           task: b
     """, 5, "rules[0].task.task", "5-50"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         task:
           task: build-api
           timeout: 600
     """, 6, "rules[0].task.timeout", "belongs to a docker build"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build: {source_location: "source/1/a.tar.gz", image_names: ["x/y:1"]}
         outputs: [x/y]
     """, 5, "rules[0].outputs", "only for task rules"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         task: {task: build-api}
         outputs: apps/api
     """, 5, "rules[0].outputs", "must be a list"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         task: {task: build-api}
         outputs:
           - apps/api
           - myacr.azurecr.io/apps/api
     """, 7, "rules[0].outputs[1]", "registry host"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         task: {task: build-api}
         outputs:
           - apps/api
           - apps/api
     """, 7, "rules[0].outputs[1]", "listed twice"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         task: {task: build-api}
         outputs: [7]
     """, 5, "rules[0].outputs[0]", "must be a repository string"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         task: {task: build-api}
         digest_argument: base-digest
     """, 5, "rules[0].digest_argument", "invalid digest_argument"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         build:
           source_location: https://git.example.com/team/web.git#main
           image_names: [apps/web:1]
           arguments:
             BASE_IMAGE_DIGEST: sha256:00
     """, 8, "rules[0].build.arguments.BASE_IMAGE_DIGEST", "clashes with the digest argument"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         task:
           task: build-api
           arguments: {BASE: x}
         digest_argument: BASE
     """, 6, "rules[0].task.arguments.BASE", "clashes"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         when: {repository: c/d}
         task: {task: build-api}
     """, 4, "rules[0].when", "duplicate key 'when' (first on line 3)"),
    ("""\
     rules:
       - name: r
         when: {repository: a/b}
         task: {task: build-api, task: other-task}
     """, 4, "rules[0].task.task", "duplicate key 'task'"),
]


@pytest.mark.parametrize("text, line, field, fragment", BAD, ids=[f"{b[2]}-{b[3]}" for b in BAD])
def test_bad_rule_file(text, line, field, fragment):
    problem = only_problem(yaml_text(text))
    assert (problem.line, problem.field) == (line, field), str(problem)
    assert fragment in problem.message


def test_misspelt_rules_key():
    found = problems("rule: []\n")
    assert [(p.line, p.field) for p in found] == [(1, "rule"), (1, None)]
    assert "unknown top-level key 'rule'" in found[0].message and "no 'rules' list" in found[1].message


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n"])
def test_yaml_11_booleans_are_strings(word):
    text = yaml_text(f"""
        rules:
          - name: r
            when: {{repository: a/b}}
            build:
              source_location: https://git.example.com/team/web.git#main
              image_names: [apps/web:1]
              no_cache: {word}
        """)
    problem = only_problem(text)
    assert (problem.line, problem.field) == (7, "rules[0].build.no_cache")
    assert "must be true or false, not a string" in problem.message


def test_duplicate_rule_names():
    text = yaml_text("""
        rules:
          - name: web
            when: {repository: a/b}
            task: {task: build-api}
          - name: other
            when: {repository: c/d}
            task: {task: build-api}
          - name: web
            when: {repository: e/f}
            task: {task: build-api}
        """)
    problem = only_problem(text)
    assert (problem.line, problem.field) == (8, "rules[2].name")
    assert problem.message == "duplicate rule name 'web' (first used on line 2)"


def test_every_problem_is_reported_in_line_order():
    text = yaml_text("""
        rules:
          - name: BAD
            when: {repository: a/b}
            task: {task: build-api}
          - name: ok
            when: {}
            task: {task: x}
          - name: fine
            when: {repository: c/d}
            build: {source_location: "source/1/a.tar.gz", image_names: ["e/f:1"], colour: red}
        extra: 1
        """)
    found = problems(text)
    assert [(p.line, p.field) for p in found] == [
        (2, "rules[0].name"), (6, "rules[1].when"), (7, "rules[1].task.task"), (10, "rules[2].build.colour"),
        (11, "extra")]


def test_rule_file_error_is_a_validation_error():
    with pytest.raises(ValidationError) as info:
        parse_rules("rules: 3\n")
    assert info.value.code == "InvalidRuleFile"
    assert info.value.message == "the rule file has 1 problem"


# --- YAML-level problems ---------------------------------------------------------------------

@pytest.mark.parametrize("text, line, fragment", [
    ("rules:\n  - name: a\n    when: {repository: a/b\n", 4, "YAML syntax error"),
    ("rules:\n  - name: a\n   when: x\n", 3, "YAML syntax error"),
    ("rules: [\n", 2, "YAML syntax error"),
    ("rules: []\n---\nrules: []\n", 2, "single document"),
    ("rules: []\nx: !!python/object/apply:os.system [ls]\n", 2, "constructor"),
    ("rules: []\nwhen: 2026-13-01\n", 2, "could not be read"),
    ("rules: []\n# ok\n\tbad: tab\n", 3, "YAML syntax error"),
    ("rules: *nothing\n", 1, "undefined alias"),
])
def test_yaml_errors_report_their_line(text, line, fragment):
    problem = only_problem(text)
    assert problem.line == line, str(problem)
    assert fragment in problem.message


def test_invalid_utf8_reports_its_line():
    problem = only_problem(b"rules: []\n# caf\xe9\n")
    assert (problem.line, "not valid UTF-8" in problem.message) == (2, True)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "null\n"])
def test_empty_file_is_an_error(text):
    assert "empty" in only_problem(text).message


def test_too_large():
    problem = only_problem_kw("rules: []\n" + "#" * 100, max_bytes=50)
    assert problem.line is None and "limit is 50 bytes" in problem.message


def only_problem_kw(text, **kwargs):
    with pytest.raises(RuleFileError) as info:
        parse_rules(text, **kwargs)
    [problem] = info.value.problems
    return problem


def test_not_text():
    with pytest.raises(TypeError):
        parse_rules(None)  # type: ignore[arg-type]


def test_anchor_and_alias_share_a_build():
    text = yaml_text("""
        rules:
          - name: one
            when: {repository: base/one}
            build: &web
              source_location: https://git.example.com/team/web.git#main
              image_names: ["apps/web:{{.Run.ID}}"]
          - name: two
            when: {repository: base/two}
            build: *web
        """)
    one, two = parse_rules(text).rules
    assert one.spec == two.spec


def test_problem_in_an_alias_is_reported_at_the_anchor():
    text = yaml_text("""
        rules:
          - name: one
            when: {repository: base/one}
            build: &web
              source_location: https://git.example.com/team/web.git#main
              image_names: ["apps/web"]
          - name: two
            when: {repository: base/two}
            build: *web
        """)
    found = problems(text)
    assert [(p.line, p.field) for p in found] == [(6, "rules[0].build.image_names[0]"),
                                                  (6, "rules[1].build.image_names[0]")]


# --- cycles ----------------------------------------------------------------------------------

def test_self_trigger():
    text = as_json(rule("loop", {"repository": "apps/*"}, build("apps/web:{{.Run.ID}}")))
    problem = only_problem(text)
    assert (problem.line, problem.field) == (3, "rules[0]")
    assert "rule 'loop' would trigger itself" in problem.message and "apps/web" in problem.message


def test_self_trigger_of_a_task_through_its_outputs():
    text = as_json(rule("t", {"repository": "base/*"}, task(), outputs=["base/python"]))
    assert "would trigger itself" in only_problem(text).message


def test_two_rule_cycle():
    text = yaml_text("""
        rules:
          - name: a
            when: {repository: apps/a}
            build: {source_location: "source/1/a.tar.gz", image_names: ["apps/b:1"]}
          - name: b
            when: {repository: apps/b}
            build: {source_location: "source/1/b.tar.gz", image_names: ["apps/a:1"]}
        """)
    problem = only_problem(text)
    assert (problem.line, problem.field) == (2, "rules[0]")
    assert "a -> b -> a" in problem.message
    assert "a pushes apps/b:1, which b watches" in problem.message


def test_three_rule_cycle_names_every_rule():
    text = as_json(
        rule("first", {"repository": "base/x"}, build("mid/y:{{.Run.ID}}")),
        rule("unrelated", {"repository": "other/*"}, build("sink/z:1")),
        rule("second", {"repository": "mid/*"}, task(), outputs=["top/z"]),
        rule("third", {"repository": "top/z", "tag": "*"}, build("base/x:latest")),
    )
    problem = only_problem(text)
    assert problem.field == "rules[0]"
    assert "first -> second -> third -> first" in problem.message
    assert "unrelated" not in problem.message


def test_chain_without_a_cycle_is_fine():
    text = as_json(
        rule("base", {"repository": "library/python"}, build("base/python:{{.Run.ID}}")),
        rule("app", {"repository": "base/python"}, build("apps/api:{{.Run.ID}}")),
        rule("deploy", {"repository": "apps/*"}, task(), outputs=["deploy/bundle"]),
    )
    rules = parse_rules(text)
    assert [r.name for r in rules.matching("base/python", "ca1")] == ["app"]


def test_literal_output_tag_that_the_when_tag_excludes_is_no_cycle():
    text = as_json(rule("r", {"repository": "apps/web", "tag": "1.*"}, build("apps/web:latest")))
    assert len(parse_rules(text)) == 1


def test_templated_output_tag_may_match_any_tag():
    text = as_json(rule("r", {"repository": "apps/web", "tag": "1.*"}, build("apps/web:{{.Run.ID}}")))
    assert "would trigger itself" in only_problem(text).message


def test_push_disabled_build_has_no_outputs_and_no_cycle():
    text = as_json(rule("r", {"repository": "apps/*"}, build("apps/web:1", push=False)))
    assert parse_rules(text).rules[0].outputs == ()


def test_task_without_outputs_cannot_be_checked_and_is_accepted():
    text = as_json(rule("r", {"repository": "apps/*"}, task()))
    assert parse_rules(text).rules[0].outputs == ()


def test_cycle_inside_a_larger_loop_lists_all_members():
    text = as_json(
        rule("a", {"repository": "x/a"}, build("x/b:1", "x/c:1")),
        rule("b", {"repository": "x/b"}, build("x/a:1")),
        rule("c", {"repository": "x/c"}, build("x/b:1")),
    )
    problem = only_problem(text)
    assert "a -> b -> a" in problem.message
    assert "rules in the loop: a, b, c" in problem.message


def test_self_trigger_and_cycle_are_both_reported():
    text = as_json(
        rule("a", {"repository": "x/*"}, build("x/a:1", "y/b:1")),
        rule("b", {"repository": "y/*"}, build("x/z:1")),
    )
    messages = [p.message for p in problems(text)]
    assert len(messages) == 2
    assert any("would trigger itself" in m for m in messages)
    assert any("a -> b -> a" in m for m in messages)


# --- the runtime chain cut ---------------------------------------------------------------------

@pytest.mark.parametrize("chain, name, allowed", [
    ([], "a", True),
    (["a"], "b", True),
    (["a", "b"], "a", False),
    (("a",), "a", False),
    ([f"r{i}" for i in range(MAX_CHAIN - 1)], "x", True),
    ([f"r{i}" for i in range(MAX_CHAIN)], "x", False),
])
def test_chain_allows(chain, name, allowed):
    assert chain_allows(chain, name) is allowed


def test_max_chain_is_five():
    assert MAX_CHAIN == 5


@pytest.mark.parametrize("chain, name, limit, reason", [
    ([], "a", 1, None),
    (["a"], "b", 1, "the chain a reached its limit of 1 rule"),
    (["a"], "b", 2, None),
    (["a", "b"], "c", 2, "the chain a -> b reached its limit of 2 rules"),
    (["a", "b"], "b", 9, "b already produced this image (chain a -> b)"),
    ([f"r{i}" for i in range(19)], "x", 20, None),
])
def test_chain_cut_names_the_reason_and_honours_the_configured_limit(chain, name, limit, reason):
    assert chain_cut(chain, name, limit) == reason
    assert chain_allows(chain, name, limit) is (reason is None)


def test_chain_limit_must_be_positive():
    with pytest.raises(ValueError):
        chain_cut([], "a", 0)
