"""Contract tests of the stand-in's supply-chain side, against the session ``stack``:

- the emulated ACR's referrers API (OCI distribution-spec 1.1 "Listing Referrers"): an OCI image
  index of the descriptors of every manifest of the repository whose ``subject`` is the digest,
  ``artifactType`` (else an image manifest's config media type) and annotations included; the
  ``artifactType`` filter with ``OCI-Filters-Applied``; an empty index for a digest nobody refers to;
  400 for a malformed digest, 404 for an unknown repository; the data plane's authorization;
- ``OCI-Subject`` on a manifest PUT that has a subject (and not on one that has none);
- ARM ``importImage`` by digest into ``untaggedTargetRepositories`` (there by digest, no tag), beside
  ``targetTags``; an imported referrer listed by the target's referrers API, concurrent imports of
  one subject's referrers all listed, an index imported without its platform manifests' referrers;
  the index kept on disk beside the backing storage, so a new emulator over it lists the same;
- the upstream helpers (devstack.oci): the referrers tag schema's index after two pushes lists both,
  is not duplicated by a third, and is not overwritten when the tag holds something else; cosign's
  ``.sig`` (appended), ``.att`` and ``.sbom`` manifests, on the anonymous and the token-auth upstream;
- data-plane pushes with the app's identity (AAD token -> refresh token -> access token with
  ``push``): blobs monolithic and chunked, an ``airlock/trust:<tag>`` artifact; refusal for an
  identity whose role only pulls (AcrPull, and the app's import role);
- ``python -m devstack up --seed``'s seeding: the catalogue in the upstream and a sample manifest.
"""
from __future__ import annotations

import hashlib
import json
import threading
import uuid

import httpx
import jwt
import pytest
from azure.identity import ManagedIdentityCredential
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.models import ImportImageParameters, ImportSource

from devstack import oci
from devstack.emulator.state import Emulator, EmulatorConfig

ACR_SCOPE = "https://containerregistry.azure.net/.default"
ARM_SCOPE = "https://management.azure.com/.default"
SBOM_TYPE = "application/vnd.example.sbom.v1"
SIG_TYPE = "application/vnd.example.signature.v1"
TRUST_TYPE = "application/vnd.airlock.trust.v1+json"


@pytest.fixture(scope="module")
def emu(stack):
    if stack.emulator is None:
        pytest.skip("the stack runs without the ACR emulator")
    return stack.emulator


@pytest.fixture(scope="module")
def http(stack):
    with httpx.Client(base_url=stack.arm_endpoint, verify=stack.ssl_context(), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def mgmt(stack, emu):
    with pytest.MonkeyPatch.context() as patch:
        stack.apply_env(patch)
        credential = ManagedIdentityCredential()
        client = ContainerRegistryManagementClient(credential, stack.subscription_id, base_url=stack.arm_endpoint,
                                                   credential_scopes=[ARM_SCOPE], polling_interval=0.2)
        yield client


def import_image(stack, mgmt, source: str, *, tags=None, untagged=None) -> None:
    parameters = ImportImageParameters(source=ImportSource(registry_uri=stack.upstream_host, source_image=source),
                                       target_tags=tags, untagged_target_repositories=untagged)
    assert mgmt.registries.begin_import_image(stack.resource_group, stack.registry_name, parameters).result() is None


def aad_token(stack, client_id: str | None = None) -> str:
    """A managed-identity token for ACR from the stand-in's identity endpoint, as the app gets one."""
    with pytest.MonkeyPatch.context() as patch:
        stack.apply_env(patch)
        return ManagedIdentityCredential(client_id=client_id).get_token(ACR_SCOPE).token


def access_token(stack, http, scope: str, client_id: str | None = None) -> str:
    """The ACR exchange: AAD token -> refresh token (/oauth2/exchange) -> access token (/oauth2/token)."""
    refresh = http.post("/oauth2/exchange", data={"grant_type": "access_token", "service": stack.login_server,
                                                  "access_token": aad_token(stack, client_id)})
    assert refresh.status_code == 200, refresh.text
    access = http.post("/oauth2/token", data={"grant_type": "refresh_token", "service": stack.login_server,
                                              "scope": scope, "refresh_token": refresh.json()["refresh_token"]})
    assert access.status_code == 200, access.text
    return access.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def image(name: str, **kwargs) -> oci.ImageLayout:
    return oci.build_image(name, seed=name, layers=1, **kwargs)


def sbom(subject: dict, text: str, **annotations: str) -> oci.Artifact:
    return oci.build_artifact(SBOM_TYPE, [oci.ArtifactLayer.of("application/spdx+json", text.encode())],
                              subject=subject, annotations=annotations or None)


def without_artifact_type(subject: dict, config_type: str) -> oci.Artifact:
    """An image manifest with a subject and no artifactType: listed with its config's media type."""
    config = oci.Blob(config_type, b'{"kind": "config"}')
    layer = oci.Blob("application/octet-stream", b"payload")
    manifest = {"schemaVersion": 2, "mediaType": oci.MEDIA_OCI_MANIFEST, "config": config.descriptor(),
                "layers": [layer.descriptor()], "subject": subject}
    return oci.Artifact(oci.Blob(oci.MEDIA_OCI_MANIFEST, oci.canonical_json(manifest)), (config, layer))


def referrers(http, repository: str, digest: str, token: str, **params) -> httpx.Response:
    return http.get(f"/v2/{repository}/referrers/{digest}", params=params, headers=bearer(token))


# --- the referrers API and OCI-Subject -------------------------------------------------------------


@pytest.fixture(scope="module")
def pushed(stack, emu, http):
    """An image pushed into the emulated ACR with the app's identity, and three referrers of it."""
    repository = unique("refs/app")
    token = access_token(stack, http, f"repository:{repository}:pull,push")
    auth = f"Bearer {token}"
    subject_image = image(repository)
    oci.push(subject_image, f"{stack.backing_host}/{repository}:1.0", tls_verify=False)
    subject = oci.layout_descriptor(subject_image)
    first = sbom(subject, "spdx one", **{"org.example.format": "spdx", "org.opencontainers.image.created": "2024"})
    second = oci.build_artifact(SIG_TYPE, subject=subject)
    third = without_artifact_type(subject, "application/vnd.example.config.v1+json")
    results = [oci.push_artifact(a, f"{stack.login_server}/{repository}", cert_dir=stack.certs_dir,
                                 authorization=auth) for a in (first, second, third)]
    return repository, token, subject, (first, second, third), results


def test_manifest_put_with_a_subject_answers_oci_subject(pushed):
    _, _, subject, _, results = pushed
    assert [r.oci_subject for r in results] == [subject["digest"]] * 3
    assert [r.referrers_tag for r in results] == [None] * 3  # the registry keeps the list: no fallback tag


def test_manifest_put_without_a_subject_has_no_oci_subject(stack, http, pushed):
    repository, token, _, _, _ = pushed
    plain = oci.build_artifact(TRUST_TYPE, [oci.ArtifactLayer.of("application/json", b"{}")])
    with oci.RegistryClient(stack.login_server, cert_dir=stack.certs_dir, authorization=f"Bearer {token}") as client:
        answer = client.push(repository, plain, "plain")
    assert answer.status_code == 201 and "oci-subject" not in answer.headers
    assert answer.headers["docker-content-digest"] == plain.digest


def test_referrers_lists_every_referrer_with_its_descriptor(http, pushed):
    repository, token, subject, artifacts, _ = pushed
    answer = referrers(http, repository, subject["digest"], token)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == oci.MEDIA_OCI_INDEX
    assert "oci-filters-applied" not in answer.headers
    index = answer.json()
    assert (index["schemaVersion"], index["mediaType"]) == (2, oci.MEDIA_OCI_INDEX)
    listed = {d["digest"]: d for d in index["manifests"]}
    assert set(listed) == {a.digest for a in artifacts}
    first, second, third = artifacts
    assert listed[first.digest] == {"mediaType": oci.MEDIA_OCI_MANIFEST, "digest": first.digest,
                                    "size": len(first.manifest.data), "artifactType": SBOM_TYPE,
                                    "annotations": {"org.example.format": "spdx",
                                                    "org.opencontainers.image.created": "2024"}}
    assert listed[second.digest]["artifactType"] == SIG_TYPE and "annotations" not in listed[second.digest]
    assert listed[third.digest]["artifactType"] == "application/vnd.example.config.v1+json"  # the config's
    assert all(listed[a.digest] == a.referrer_descriptor() for a in artifacts)


def test_referrers_filter_by_artifact_type(http, pushed):
    repository, token, subject, (first, _, _), _ = pushed
    answer = referrers(http, repository, subject["digest"], token, artifactType=SBOM_TYPE)
    assert answer.status_code == 200 and answer.headers["oci-filters-applied"] == "artifactType"
    assert [d["digest"] for d in answer.json()["manifests"]] == [first.digest]
    none = referrers(http, repository, subject["digest"], token, artifactType="application/vnd.nothing")
    assert none.headers["oci-filters-applied"] == "artifactType" and none.json()["manifests"] == []


def test_referrers_of_a_digest_nobody_refers_to_is_an_empty_index(http, pushed):
    repository, token, _, (first, _, _), _ = pushed
    for digest in (first.digest, "sha256:" + "0" * 64):  # a referrer itself; a digest that is nowhere
        answer = referrers(http, repository, digest, token)
        assert (answer.status_code, answer.json()) == (200, {"schemaVersion": 2, "mediaType": oci.MEDIA_OCI_INDEX,
                                                             "manifests": []})


def test_referrers_errors_and_authorization(stack, http, pushed):
    repository, token, subject, _, _ = pushed
    bad = referrers(http, repository, "sha256:abc", token)
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "DIGEST_INVALID"
    unknown_repository = unique("refs/none")
    other = access_token(stack, http, f"repository:{unknown_repository}:pull")
    missing = referrers(http, unknown_repository, subject["digest"], other)
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    anonymous = http.get(f"/v2/{repository}/referrers/{subject['digest']}")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].endswith(f'scope="repository:{repository}:pull"')
    assert referrers(http, repository, subject["digest"], other).status_code == 401  # a token for another repository


def test_a_deleted_referrer_is_no_longer_listed(stack, http, pushed):
    repository, _, subject, _, _ = pushed
    token = access_token(stack, http, f"repository:{repository}:pull,push,delete")
    doomed = sbom(subject, "to be deleted")
    oci.push_artifact(doomed, f"{stack.login_server}/{repository}", cert_dir=stack.certs_dir,
                      authorization=f"Bearer {token}")
    assert doomed.digest in [d["digest"] for d in referrers(http, repository, subject["digest"], token).json()
                             ["manifests"]]
    deleted = http.delete(f"/v2/{repository}/manifests/{doomed.digest}", headers=bearer(token))
    assert deleted.status_code == 202
    listed = [d["digest"] for d in referrers(http, repository, subject["digest"], token).json()["manifests"]]
    assert doomed.digest not in listed and len(listed) == 3


def test_the_index_is_kept_beside_the_backing_storage_for_the_next_emulator(emu, pushed):
    repository, _, subject, artifacts, _ = pushed
    assert emu.referrers.root.is_relative_to(emu.config.backing_storage_path)
    later = Emulator(EmulatorConfig(backing_storage_path=emu.config.backing_storage_path))
    try:
        assert {d["digest"] for d in later.referrers.listing(repository, subject["digest"])} >= {
            a.digest for a in artifacts}
    finally:
        later.close()
    assert later.referrers.root.exists()  # not a temporary index: closing keeps it


# --- importImage: untagged targets, referrers imported by digest ---------------------------------


@pytest.fixture(scope="module")
def upstream_graph(stack):
    """Upstream: a single-platform image with two referrers, and a two-platform index whose arm64
    manifest has a referrer of its own (all pushed with the referrers tag schema fallback)."""
    repository = unique("graph/app")
    single, multi = image(repository), image(repository + "-multi", platforms=("linux/amd64", "linux/arm64"))
    up = stack.upstream_host
    oci.push(single, f"{up}/{repository}:1.0", cert_dir=stack.certs_dir)
    oci.push(multi, f"{up}/{repository}:multi", cert_dir=stack.certs_dir)
    subject = oci.layout_descriptor(single)
    arm64 = next(i for i in multi.images if i.platform.architecture == "arm64")
    arm64_subject = {"mediaType": oci.MEDIA_OCI_MANIFEST, "digest": arm64.manifest_digest, "size": arm64.manifest_size}
    artifacts = {"sbom": sbom(subject, "single"), "sig": oci.build_artifact(SIG_TYPE, subject=subject),
                 "arm64": sbom(arm64_subject, "arm64 only")}
    for artifact in artifacts.values():
        pushed = oci.push_artifact(artifact, f"{up}/{repository}", cert_dir=stack.certs_dir)
        assert pushed.oci_subject is None and pushed.referrers_tag  # distribution 2.8: the fallback
    return repository, single, multi, arm64.manifest_digest, artifacts


def acr_tags(http, token: str, repository: str) -> list[str]:
    answer = http.get(f"/v2/{repository}/tags/list", headers=bearer(token))
    assert answer.status_code in (200, 404), answer.text
    return (answer.json().get("tags") or []) if answer.status_code == 200 else []


def test_untagged_import_by_digest_lands_without_a_tag(stack, http, mgmt, upstream_graph):
    repository, single, _, _, _ = upstream_graph
    target = unique("untagged/app")
    import_image(stack, mgmt, f"{repository}@{single.digest}", untagged=[target])
    token = access_token(stack, http, f"repository:{target}:pull,metadata_read")
    by_digest = http.get(f"/v2/{target}/manifests/{single.digest}", headers={**bearer(token),
                                                                                "Accept": oci.MEDIA_OCI_MANIFEST})
    assert by_digest.status_code == 200 and hashlib.sha256(by_digest.content).hexdigest() == single.digest[7:]
    assert acr_tags(http, token, target) == []
    attributes = http.get(f"/acr/v1/{target}/_manifests/{single.digest}", headers=bearer(token))
    assert attributes.status_code == 200 and attributes.json()["manifest"]["tags"] == []


def test_import_with_target_tags_and_untagged_repositories_writes_both(stack, http, mgmt, upstream_graph):
    repository, single, _, _, _ = upstream_graph
    tagged, untagged = unique("both/tagged"), unique("both/untagged")
    import_image(stack, mgmt, f"{repository}@{single.digest}", tags=[f"{tagged}:v1"], untagged=[untagged])
    token = access_token(stack, http, f"repository:{tagged}:pull repository:{untagged}:pull")
    assert acr_tags(http, token, tagged) == ["v1"] and acr_tags(http, token, untagged) == []
    for target in (tagged, untagged):
        head = http.head(f"/v2/{target}/manifests/{single.digest}", headers={**bearer(token),
                                                                             "Accept": oci.MEDIA_OCI_MANIFEST})
        assert head.status_code == 200


def test_referrers_imported_by_digest_are_listed_in_the_target(stack, http, mgmt, upstream_graph):
    repository, single, _, _, artifacts = upstream_graph
    target = unique("mirror/app")
    import_image(stack, mgmt, f"{repository}@{single.digest}", tags=[f"{target}:1.0"])
    token = access_token(stack, http, f"repository:{target}:pull")
    assert referrers(http, target, single.digest, token).json()["manifests"] == []  # the image came alone
    for name in ("sbom", "sig"):
        import_image(stack, mgmt, f"{repository}@{artifacts[name].digest}", untagged=[target])
    listed = referrers(http, target, single.digest, token).json()["manifests"]
    assert sorted(listed, key=lambda d: d["digest"]) == sorted(
        (artifacts[n].referrer_descriptor() for n in ("sbom", "sig")), key=lambda d: d["digest"])
    assert acr_tags(http, token, target) == ["1.0"]  # the referrers came without tags
    sbom_only = referrers(http, target, single.digest, token, artifactType=SBOM_TYPE).json()["manifests"]
    assert [d["digest"] for d in sbom_only] == [artifacts["sbom"].digest]


def test_concurrent_imports_of_one_subjects_referrers_are_all_listed(stack, http, mgmt, upstream_graph):
    repository, single, _, _, _ = upstream_graph
    subject = oci.layout_descriptor(single)
    many = [sbom(subject, f"concurrent {n}", **{"org.example.n": str(n)}) for n in range(6)]
    for artifact in many:
        oci.push_artifact(artifact, f"{stack.upstream_host}/{repository}", cert_dir=stack.certs_dir)
    target = unique("concurrent/app")
    pollers = [mgmt.registries.begin_import_image(stack.resource_group, stack.registry_name, ImportImageParameters(
        source=ImportSource(registry_uri=stack.upstream_host, source_image=f"{repository}@{a.digest}"),
        untagged_target_repositories=[target])) for a in many]
    errors: list[BaseException] = []

    def wait(poller) -> None:
        try:
            poller.result()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wait, args=(p,)) for p in pollers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    token = access_token(stack, http, f"repository:{target}:pull")
    listed = {d["digest"]: d for d in referrers(http, target, single.digest, token).json()["manifests"]}
    assert listed == {a.digest: a.referrer_descriptor() for a in many}


def test_an_imported_index_leaves_its_platform_manifests_referrers_behind(stack, http, mgmt, upstream_graph):
    repository, _, multi, arm64_digest, artifacts = upstream_graph
    target = unique("mirror/multi")
    import_image(stack, mgmt, f"{repository}@{multi.digest}", tags=[f"{target}:multi"])
    token = access_token(stack, http, f"repository:{target}:pull")
    arm64 = http.head(f"/v2/{target}/manifests/{arm64_digest}", headers={**bearer(token),
                                                                          "Accept": oci.MEDIA_OCI_MANIFEST})
    assert arm64.status_code == 200  # the platform manifest came with its index
    assert referrers(http, target, arm64_digest, token).json()["manifests"] == []
    missing = http.head(f"/v2/{target}/manifests/{artifacts['arm64'].digest}",
                        headers={**bearer(token), "Accept": oci.MEDIA_OCI_MANIFEST})
    assert missing.status_code == 404  # its referrer did not
    import_image(stack, mgmt, f"{repository}@{artifacts['arm64'].digest}", untagged=[target])
    listed = referrers(http, target, arm64_digest, token).json()["manifests"]
    assert [d["digest"] for d in listed] == [artifacts["arm64"].digest]


# --- the upstream side: referrers tag schema, cosign's tag scheme --------------------------------


def upstream_manifest(stack, repository: str, tag: str, *, auth: bool = False) -> dict:
    host = stack.upstream_auth_host if auth else stack.upstream_host
    raw = oci.inspect_raw(f"{host}/{repository}:{tag}", cert_dir=stack.certs_dir,
                          creds=stack.upstream_auth_creds if auth else None)
    return json.loads(raw)


@pytest.mark.parametrize("auth", [False, True], ids=["anonymous", "token-auth"])
def test_upstream_referrers_tag_schema_index_after_two_pushes_lists_both(stack, emu, auth):
    host = stack.upstream_auth_host if auth else stack.upstream_host
    creds = stack.upstream_auth_creds if auth else None
    repository = unique("private/fallback" if auth else "fallback/app")
    subject_image = image(repository)
    oci.push(subject_image, f"{host}/{repository}:1.0", cert_dir=stack.certs_dir, creds=creds)
    subject = oci.layout_descriptor(subject_image)
    first, second = sbom(subject, "first", **{"org.example.k": "v"}), oci.build_artifact(SIG_TYPE, subject=subject)
    for artifact in (first, second, first):  # the third push is a repeat: listed once
        oci.push_artifact(artifact, f"{host}/{repository}", cert_dir=stack.certs_dir, creds=creds)
    tag = oci.referrers_tag(subject_image.digest)
    assert tag == "sha256-" + subject_image.digest[7:]
    index = upstream_manifest(stack, repository, tag, auth=auth)
    assert index["mediaType"] == oci.MEDIA_OCI_INDEX and index["schemaVersion"] == 2
    assert index["manifests"] == [first.referrer_descriptor(), second.referrer_descriptor()]
    assert index["manifests"][0]["artifactType"] == SBOM_TYPE
    assert index["manifests"][0]["annotations"] == {"org.example.k": "v"}
    for artifact in (first, second):  # each referrer is in the repository by digest
        assert oci.sha256_digest(oci.inspect_raw(f"{host}/{repository}@{artifact.digest}", cert_dir=stack.certs_dir,
                                                 creds=creds)) == artifact.digest


def test_upstream_fallback_refuses_to_overwrite_a_tag_that_is_not_an_index(stack):
    repository = unique("fallback/clash")
    subject_image = image(repository)
    oci.push(subject_image, f"{stack.upstream_host}/{repository}:1.0", cert_dir=stack.certs_dir)
    squatter = image(repository + "-other")
    tag = oci.referrers_tag(subject_image.digest)
    oci.push(squatter, f"{stack.upstream_host}/{repository}:{tag}", cert_dir=stack.certs_dir)
    with pytest.raises(oci.OciError, match="not an OCI image index"):
        oci.push_artifact(sbom(oci.layout_descriptor(subject_image), "x"), f"{stack.upstream_host}/{repository}",
                          cert_dir=stack.certs_dir)
    assert upstream_manifest(stack, repository, tag)["mediaType"] == oci.MEDIA_OCI_MANIFEST  # left alone


def test_cosign_tag_scheme_sig_att_and_sbom(stack):
    repository = unique("cosign/app")
    subject_image = image(repository)
    up = stack.upstream_host
    oci.push(subject_image, f"{up}/{repository}:1.0", cert_dir=stack.certs_dir)
    digest = subject_image.digest
    payload = oci.simple_signing_payload(f"{up}/{repository}", digest)
    first = oci.cosign_signature_layer(payload, "c2lnbmF0dXJlLTE=", certificate="-----BEGIN CERTIFICATE-----\n",
                                       chain="-----BEGIN CERTIFICATE-----\n", bundle={"SignedEntryTimestamp": "e"})
    second = oci.cosign_signature_layer(payload, "c2lnbmF0dXJlLTI=")
    oci.push_cosign([first], f"{up}/{repository}", digest, cert_dir=stack.certs_dir)
    oci.push_cosign([second, first], f"{up}/{repository}", digest, cert_dir=stack.certs_dir)  # appends, no repeat
    sig = upstream_manifest(stack, repository, f"sha256-{digest[7:]}.sig")
    assert sig["mediaType"] == oci.MEDIA_OCI_MANIFEST and sig["config"]["mediaType"] == oci.MEDIA_OCI_CONFIG
    assert [layer["mediaType"] for layer in sig["layers"]] == [oci.MEDIA_COSIGN_SIMPLESIGNING] * 2
    assert [layer["annotations"][oci.COSIGN_SIGNATURE] for layer in sig["layers"]] == ["c2lnbmF0dXJlLTE=",
                                                                                     "c2lnbmF0dXJlLTI="]
    assert set(sig["layers"][0]["annotations"]) == {oci.COSIGN_SIGNATURE, oci.COSIGN_CERTIFICATE, oci.COSIGN_CHAIN,
                                                    oci.COSIGN_BUNDLE}
    assert sig["layers"][0]["digest"] == oci.sha256_digest(payload)
    body = json.loads(payload)
    assert body["critical"]["image"]["docker-manifest-digest"] == digest
    assert body["critical"]["type"] == "cosign container image signature"
    config = json.loads(httpx.get(f"https://{up}/v2/{repository}/blobs/{sig['config']['digest']}",
                                  verify=stack.ssl_context()).content)
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in sig["layers"]]

    envelope = json.dumps({"payloadType": "application/vnd.in-toto+json", "payload": "e30=", "signatures": []}).encode()
    oci.push_cosign([oci.cosign_attestation_layer(envelope, "https://slsa.dev/provenance/v1")], f"{up}/{repository}",
                    digest, "att", cert_dir=stack.certs_dir)
    att = upstream_manifest(stack, repository, f"sha256-{digest[7:]}.att")
    assert att["layers"][0]["mediaType"] == oci.MEDIA_DSSE_ENVELOPE
    assert att["layers"][0]["annotations"] == {"predicateType": "https://slsa.dev/provenance/v1",
                                               oci.COSIGN_SIGNATURE: ""}
    spdx = b'{"spdxVersion": "SPDX-2.3"}'
    oci.push_cosign([oci.ArtifactLayer.of("text/spdx+json", spdx)], f"{up}/{repository}", digest, "sbom",
                    cert_dir=stack.certs_dir)
    assert upstream_manifest(stack, repository, f"sha256-{digest[7:]}.sbom")["layers"][0]["digest"] == \
        oci.sha256_digest(spdx)
    with pytest.raises(ValueError):
        oci.cosign_tag(digest, "exe")


# --- data-plane pushes with the app's identity; roles ---------------------------------------------


def test_push_of_an_artifact_with_a_push_token(stack, http, emu):
    repository = "airlock/trust"
    tag = unique("run")
    token = access_token(stack, http, f"repository:{repository}:pull,push")
    assert {"pull", "push"} <= set(jwt.decode(token, options={"verify_signature": False})["access"][0]["actions"])
    material = oci.build_artifact(TRUST_TYPE, [oci.ArtifactLayer.of("application/json", b'{"verified": true}')],
                                  annotations={"org.opencontainers.image.title": "trust"})
    pushed = oci.push_artifact(material, f"{stack.login_server}/{repository}:{tag}", cert_dir=stack.certs_dir,
                               authorization=f"Bearer {token}")
    assert pushed.digest == material.digest and pushed.oci_subject is None
    fetched = http.get(f"/v2/{repository}/manifests/{tag}", headers={**bearer(token), "Accept": oci.MEDIA_OCI_MANIFEST})
    assert fetched.status_code == 200 and fetched.content == material.manifest.data
    assert fetched.headers["docker-content-digest"] == material.digest


def test_blob_uploads_monolithic_and_chunked(stack, http):
    repository = unique("uploads/app")
    headers = bearer(access_token(stack, http, f"repository:{repository}:pull,push"))
    base = stack.arm_endpoint
    # POST then a PUT with the whole blob
    data = b"monolithic " * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = http.post(f"/v2/{repository}/blobs/uploads/", headers=headers)
    assert started.status_code == 202 and started.headers["location"].startswith(f"{base}/v2/{repository}/")
    put = http.put(started.headers["location"], params={**dict(httpx.URL(started.headers["location"]).params),
                                                       "digest": digest},
                   content=data, headers={**headers, "Content-Type": "application/octet-stream"})
    assert put.status_code == 201 and put.headers["docker-content-digest"] == digest
    # POST, two PATCH chunks with Content-Range, then a PUT with the digest and no body
    data = bytes(range(256)) * 400
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = http.post(f"/v2/{repository}/blobs/uploads/", headers={**headers, "Content-Length": "0"}
                         ).headers["location"]
    half = len(data) // 2
    for start, chunk in ((0, data[:half]), (half, data[half:])):
        patch = http.patch(location, content=chunk, headers={**headers, "Content-Type": "application/octet-stream",
                                                             "Content-Range": f"{start}-{start + len(chunk) - 1}"})
        assert patch.status_code == 202 and patch.headers["range"] == f"0-{start + len(chunk) - 1}"
        location = patch.headers["location"]
    out_of_order = http.patch(location, content=b"x", headers={**headers, "Content-Range": "5-5"})
    assert out_of_order.status_code == 416
    done = http.put(location, params={**dict(httpx.URL(location).params), "digest": digest}, headers=headers)
    assert done.status_code == 201 and done.headers["docker-content-digest"] == digest
    assert http.get(f"/v2/{repository}/blobs/{digest}", headers=headers).content == data
    # a mount from a repository the token cannot pull from is refused, with both scopes challenged
    other = unique("uploads/other")
    mount = http.post(f"/v2/{repository}/blobs/uploads/", params={"mount": digest, "from": other}, headers=headers)
    assert mount.status_code == 401
    assert f"repository:{other}:pull" in mount.headers["www-authenticate"]


@pytest.fixture
def pull_only(stack, emu):
    """A user-assigned identity with a role that pulls and does not push; unassigned afterwards."""
    client_id = str(uuid.uuid4())
    yield client_id
    stack.admin("POST", "/_devstack/roles", {"client_id": client_id, "roles": None})


@pytest.mark.parametrize("role", ["AcrPull", "Container Registry Data Importer and Data Reader"])
def test_a_pull_only_identity_is_refused_a_push(stack, http, pull_only, role):
    repository = unique("refused/app")
    assigned = stack.admin("POST", "/_devstack/roles", {"client_id": pull_only, "roles": [role]})
    assert assigned["identity_roles"][pull_only] == [role]
    token = access_token(stack, http, f"repository:{repository}:pull,push", client_id=pull_only)
    granted = jwt.decode(token, options={"verify_signature": False})["access"]
    assert granted == [{"type": "repository", "name": repository, "actions": ["pull"]}]  # push not granted
    material = oci.build_artifact(TRUST_TYPE)
    with pytest.raises(oci.OciError, match="HTTP 401"):
        oci.push_artifact(material, f"{stack.login_server}/{repository}:x", cert_dir=stack.certs_dir,
                          authorization=f"Bearer {token}")
    refused = http.put(f"/v2/{repository}/manifests/x", content=material.manifest.data,
                       headers={**bearer(token), "Content-Type": oci.MEDIA_OCI_MANIFEST})
    assert refused.status_code == 401 and refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert refused.headers["www-authenticate"].endswith(f'scope="repository:{repository}:pull,push"')
    # the same identity may read
    assert http.get(f"/v2/{repository}/tags/list", headers=bearer(token)).status_code == 404  # no such repository
    # once AcrPush is assigned it may push
    stack.admin("POST", "/_devstack/roles", {"client_id": pull_only, "roles": ["AcrPush"]})
    token = access_token(stack, http, f"repository:{repository}:pull,push", client_id=pull_only)
    oci.push_artifact(material, f"{stack.login_server}/{repository}:x", cert_dir=stack.certs_dir,
                      authorization=f"Bearer {token}")


def test_roles_admin_endpoint_rejects_unknown_roles(stack, emu):
    from devstack.stack import StackError

    with pytest.raises(StackError, match="HTTP 400"):
        stack.admin("POST", "/_devstack/roles", {"client_id": "x", "roles": ["AcrPushy"]})
    assert "x" not in stack.admin("GET", "/_devstack/roles")["identity_roles"]


# --- python -m devstack up --seed ----------------------------------------------------------------


def test_seed_fills_the_upstream_and_writes_a_sample_manifest(stack, tmp_path, monkeypatch, capsys):
    from devstack.__main__ import seed
    from shared.core.manifest import parse_manifest

    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(tmp_path))
    seeded = seed(stack)
    assert set(seeded) == {name for name, _ in oci.CATALOGUE}
    for ref, digest in seeded.items():
        assert oci.sha256_digest(oci.inspect_raw(f"{stack.upstream_host}/{ref}", cert_dir=stack.certs_dir)) == digest
    manifest = (tmp_path / "images.txt").read_text()
    parsed = parse_manifest(manifest)
    assert not parsed.errors and len(parsed.entries) >= 6
    assert str(tmp_path / "images.txt") in capsys.readouterr().out
