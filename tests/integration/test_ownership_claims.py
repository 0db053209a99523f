"""Tag ownership in the sync engine against the stand-in: the plan's conflict, the claim made just before an
import (and given back when a new tag's import fails), and the CLI's plan."""
from __future__ import annotations

import uuid

import pytest

from devstack import oci
from shared.core.manifest import parse_manifest
from shared.core.ownership import owner_blob
from shared.core.plan import Action
from shared.handlers.imports import run_manifest
from shared.handlers.sync import SyncEngine
from shared.services import Services

pytestmark = pytest.mark.usefixtures("clean_faults", "airlock_env")
NGINX, BUSYBOX = "library/nginx:1.27", "library/busybox:1.36"


@pytest.fixture
def services(stack, seeded):
    return Services.from_env({**stack.env, "RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_SECONDS": "0.5"})


@pytest.fixture
def prefix():
    return f"oc{uuid.uuid4().hex[:8]}"


def owner(services, repository: str, tag: str):
    return services.store.get_json(services.settings.outcomes_container, owner_blob(repository, tag))


def test_a_plan_shows_the_conflict_and_imports_nothing(stack, seeded, services, prefix):
    in_house = oci.push(oci.build_image(f"{prefix}/app", seed="here"), f"{stack.backing_host}/{prefix}/app:2",
                        tls_verify=False)
    plan = run_manifest(services, f"{NGINX} => {prefix}/app:2\n", name="pr.txt", trigger="cli", apply=False,
                        save=False)
    [entry] = plan["entries"]
    assert entry["action"] == "error" and entry["error"]["code"] == "TagConflict"
    assert "which the airlock did not write" in entry["error"]["message"]
    assert services.acr.tag_digest(f"{prefix}/app", "2") == in_house
    marked = run_manifest(services, f"{NGINX} => {prefix}/app:2 (overwrite)\n", name="pr.txt", trigger="cli",
                          apply=False, save=False)
    assert marked["entries"][0]["action"] == "update"


def test_a_tag_claimed_by_another_manifest_after_the_plan_is_not_imported(stack, seeded, services, prefix):
    target = f"{prefix}/raced"
    first = run_manifest(services, f"{NGINX} => {target}:1\n", name="mine.txt", trigger="cli")
    assert first["status"] == "succeeded" and owner(services, target, "1")["manifest"] == "mine.txt"
    engine = SyncEngine(services, owner="mine.txt", run_id="r-test")
    plan = engine.plan(parse_manifest(f"{BUSYBOX} => {target}:1\n"))
    assert [i.action for i in plan.items] == [Action.UPDATE]  # owned at plan time
    services.store.put_json(services.settings.outcomes_container, owner_blob(target, "1"),
                            {"manifest": "other.txt", "run_id": "r-other", "digest": seeded[NGINX]})
    [outcome] = engine.apply(plan)
    assert outcome.result == "failed" and outcome.error_code == "TagConflict" and outcome.attempts == 0
    assert "belongs to manifest other.txt (run r-other)" in outcome.error_message
    assert services.acr.tag_digest(target, "1") == seeded[NGINX]


def test_a_new_tags_claim_is_given_back_when_its_import_is_refused(stack, seeded, services, prefix):
    """Planned new, then pushed in-house before the import: ACR's NoForce refuses the import, and the claim
    made for it is undone, so the next plan sees a tag the airlock did not write."""
    target = f"{prefix}/late"
    engine = SyncEngine(services, owner="mine.txt", run_id="r-test")
    plan = engine.plan(parse_manifest(f"{NGINX} => {target}:1\n"))
    assert [i.action for i in plan.items] == [Action.NEW]
    in_house = oci.push(oci.build_image(target, seed="late"), f"{stack.backing_host}/{target}:1", tls_verify=False)
    [outcome] = engine.apply(plan)
    assert outcome.result == "failed" and services.acr.tag_digest(target, "1") == in_house
    assert owner(services, target, "1") is None
    again = SyncEngine(services, owner="mine.txt").plan(parse_manifest(f"{NGINX} => {target}:1\n"))
    assert again.items[0].error.startswith("TagConflict: ")


def test_a_new_tag_is_claimed_and_untagged_imports_have_no_owner(stack, seeded, services, prefix):
    digest = seeded[BUSYBOX]
    document = run_manifest(services, f"{NGINX} => {prefix}/n:1\ndocker.io/library/busybox@{digest} => {prefix}/u\n",
                            name="claims.txt", trigger="cli")
    assert document["status"] == "succeeded"
    record = owner(services, f"{prefix}/n", "1")
    assert record["manifest"] == "claims.txt" and record["run_id"] == document["run_id"]
    assert record["digest"] == seeded[NGINX] and record["target"] == f"{prefix}/n:1"
    names = services.store.list_names(services.settings.outcomes_container, f"owners/{prefix}")
    assert names == [owner_blob(f"{prefix}/n", "1")]
