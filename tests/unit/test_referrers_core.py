"""shared.core.referrers: which digests are subjects, what a referrers index lists, what the target lacks,
and what the record, the summary and the run's warnings say."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from shared.core import referrers as core
from shared.core import runs
from shared.core.manifest import parse_manifest
from shared.core.outcome import RESULT_IMPORTED, EntryOutcome, RunRecord
from shared.core.plan import Action, PlanItem

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
D = "sha256:" + "d" * 64


def index(*children: dict, media_type: str = core.MEDIA_OCI_INDEX) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": list(children)}).encode()


def test_cosign_and_schema_tags():
    assert core.cosign_tag(A, "sig") == "sha256-" + "a" * 64 + ".sig"
    assert core.referrers_tag(A) == "sha256-" + "a" * 64
    assert core.cosign_artifact_type("sbom") == "application/vnd.dev.cosign.artifact.sbom.v1+json"
    with pytest.raises(ValueError):
        core.cosign_tag(A, "exe")
    with pytest.raises(ValueError):
        core.cosign_tag("sha256:abc", "sig")


def test_subjects_of_an_index_are_its_platform_manifests_but_not_buildx_attestations():
    raw = index({"digest": B, "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": C, "platform": {"os": "linux", "architecture": "arm64"}},
                {"digest": D, "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                 "vnd.docker.reference.digest": B}})
    assert core.subjects(A, raw) == [A, B, C]
    assert core.subjects(A, index({"digest": B}, media_type=core.MEDIA_DOCKER_LIST)) == [A, B]
    image = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"digest": B}, "layers": []}).encode()
    assert core.subjects(A, image) == [A]
    assert core.subjects(A, None) == [A]


def test_subjects_are_bounded_and_a_bad_index_is_unreadable():
    many = index(*({"digest": "sha256:" + f"{n:064x}"} for n in range(1, 200)))
    assert len(core.subjects(A, many)) == core.MAX_SUBJECTS
    with pytest.raises(core.Unreadable, match="manifests\\[0\\]"):
        core.subjects(A, index({"digest": "md5:x"}))
    with pytest.raises(core.Unreadable, match="not JSON"):
        core.subjects(A, b"\xff{")
    with pytest.raises(core.Unreadable, match="byte limit"):
        core.subjects(A, b" " * (core.MAX_INDEX_BYTES + 1))


def test_a_referrers_index_is_parsed_each_digest_once_and_bounded():
    raw = index({"digest": B, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "artifactType": "application/spdx+json"},
                {"digest": B, "artifactType": "application/spdx+json"},  # a repeat
                {"digest": "nonsense"}, "not an object", {"digest": A})   # unreadable, the subject itself
    found, skipped = core.parse_index(raw, A, "referrers")
    assert found == [core.Referrer(A, B, core.VIA_REFERRERS, "application/spdx+json", None,
                                   "application/vnd.oci.image.manifest.v1+json")]
    assert skipped == 3
    many = index(*({"digest": "sha256:" + f"{n:064x}"} for n in range(1, 40)))
    found, skipped = core.parse_index(many, A, "referrers")
    assert (len(found), skipped) == (core.MAX_PER_SUBJECT, 39 - core.MAX_PER_SUBJECT)
    with pytest.raises(core.Unreadable, match="no manifests list"):
        core.parse_index(b'{"schemaVersion": 2}', A, "referrers")


def test_selection_dedupes_filters_and_caps():
    sig = core.tag_referrer(A, "sig", B)
    sbom = core.Referrer(A, C, core.VIA_REFERRERS, "application/spdx+json")
    assert sig.artifact_type == "application/vnd.dev.cosign.artifact.sig.v1+json"
    assert core.select([sig, sbom, sig]) == ([sig, sbom], 0)
    assert core.select([sig, sbom], ("application/spdx+json",)) == ([sbom], 0)
    many = [core.Referrer(A, "sha256:" + f"{n:064x}", core.VIA_REFERRERS) for n in range(core.MAX_REFERRERS + 5)]
    kept, skipped = core.select(many)
    assert (len(kept), skipped) == (core.MAX_REFERRERS, 5)


def test_only_what_the_target_lacks_is_imported():
    sig = core.tag_referrer(A, "sig", B)
    moved = core.tag_referrer(A, "att", D)
    sbom = core.Referrer(A, C, core.VIA_REFERRERS, "application/spdx+json")
    platform = core.Referrer(B, C, core.VIA_REFERRERS)  # listed under another subject: not the same
    listed = {A: [C]}
    tags = {sig.tag: B, moved.tag: A}  # the .att tag points elsewhere at the target: upstream moved it
    assert core.to_import([sig, moved, sbom, platform], listed, tags) == [moved, platform]
    assert core.to_import([sig, sbom], {}, {}) == [sig, sbom]


def test_record_items_and_missing():
    sbom = core.Referrer(A, C, core.VIA_REFERRERS, "application/spdx+json")
    sig = core.tag_referrer(A, "sig", B)
    items = [core.record_item(sbom, core.RESULT_IMPORTED), core.record_item(sig, core.RESULT_PRESENT),
             core.record_item(core.Referrer(A, D, core.VIA_REFERRERS), core.RESULT_FAILED,
                              {"code": "ManifestUnknown", "message": "gone", "retryable": False})]
    assert items[0] == {"subject": A, "digest": C, "artifact_type": "application/spdx+json", "via": "referrers",
                        "imported": True, "result": "imported"}
    assert items[1]["tag"] == sig.tag and items[1]["imported"] is False
    assert items[2]["error"]["code"] == "ManifestUnknown"
    assert core.missing(items, {A: []}) == [C]       # imported, not listed; a failed one is not "missing"
    assert core.missing(items, {A: [C]}) == []


def entry_outcome(report: dict) -> EntryOutcome:
    manifest = parse_manifest("quay.io/org/app:1.0 => team/app:1.0\n", allowed_registries=("quay.io",))
    item = PlanItem(manifest.entries[0], Action.NEW, A, None)
    return EntryOutcome(item, RESULT_IMPORTED, 1, 1.0, target_digest_after=A, referrers=report)


def test_the_entry_record_summary_and_warnings():
    failed = core.record_item(core.tag_referrer(A, "sig", B), core.RESULT_FAILED,
                              {"code": "HTTP500", "message": "boom", "retryable": True})
    report = {"items": [core.record_item(core.Referrer(A, C, core.VIA_REFERRERS), core.RESULT_IMPORTED), failed],
              "missing": [C], "problems": [{"code": "HTTP429", "message": "slow", "retryable": True}], "skipped": 2}
    outcome = entry_outcome(report)
    doc = outcome.to_dict()
    assert doc["referrers"] == report["items"] and doc["referrers_missing"] == [C]
    assert doc["referrers_problems"] == report["problems"] and doc["referrers_skipped"] == 2
    assert doc["result"] == "imported" and doc["error"] is None  # the entry stays imported
    expected = {"imported": 1, "present": 0, "failed": 1, "missing": 1, "skipped": 2}
    assert core.summarise([doc]) == expected
    assert runs.summarise([doc])["referrers"] == expected
    warnings = core.warnings([doc])
    assert len(warnings) == 4 and all(w["line"] == 1 for w in warnings)
    assert "was not imported: HTTP500: boom" in warnings[0]["message"] and failed["tag"] in warnings[0]["message"]

    record = RunRecord("r1", "sync", "cli", "images.txt", "x", "acr", datetime.now(timezone.utc),
                       finished_at=datetime.now(timezone.utc), entries=[outcome])
    document = record.to_dict()
    assert document["status"] == "succeeded" and document["summary"]["referrers"] == expected
    assert document["warnings"] == warnings
    final = runs.final_document({"status": "running", "warnings": [{"message": "unlocked"}]}, {"1": doc},
                                finished_at=datetime.now(timezone.utc))
    assert final["status"] == "succeeded" and final["warnings"] == [{"message": "unlocked"}] + warnings


def test_without_referrers_the_record_is_as_before():
    doc = entry_outcome(None).to_dict()
    assert "referrers" not in doc and "referrers_missing" not in doc
    assert core.summarise([doc]) is None and "referrers" not in runs.summarise([doc])
    assert core.warnings([doc]) == []


def test_the_summary_table_names_each_referrer_that_did_not_make_it():
    from shared.cli.output import render_summary

    failed = core.record_item(core.tag_referrer(A, "sig", B), core.RESULT_FAILED,
                              {"code": "ManifestUnknown", "message": "gone upstream", "retryable": False})
    outcome = entry_outcome({"items": [failed, core.record_item(core.Referrer(A, C, core.VIA_REFERRERS),
                                                                core.RESULT_IMPORTED)], "missing": []})
    record = RunRecord("r1", "sync", "cli", "images.txt", "x", "acr", datetime.now(timezone.utc),
                       finished_at=datetime.now(timezone.utc), entries=[outcome])
    text = render_summary(record.to_dict())
    assert "warning: line 1: team/app:1.0: referrer tag " + failed["tag"] in text
    assert "ManifestUnknown: gone upstream" in text
    assert "referrers: 1 imported, 0 already there, 1 failed, 0 not listed by the ACR" in text
    assert "succeeded" in text


def test_another_entry_of_the_run_sees_what_the_first_imported_as_present():
    imported = core.record_item(core.Referrer(A, C, core.VIA_REFERRERS), core.RESULT_IMPORTED)
    failed = core.record_item(core.tag_referrer(A, "sig", B), core.RESULT_FAILED, {"code": "X", "message": "y"})
    report = {"items": [imported, failed], "missing": [], "problems": [], "skipped": 0}
    again = core.seen_again(report)
    assert [(i["result"], i["imported"]) for i in again["items"]] == [("present", False), ("failed", False)]
    assert report["items"][0]["result"] == "imported"  # the first entry's report is left as it was
