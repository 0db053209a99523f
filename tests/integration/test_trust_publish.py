"""Publishing the verification material into the ACR stand-in (shared.handlers.publish, ``airlock trust
publish``): the artifact lands in the data plane with the app's identity when its roles can push, is
refused while they cannot (the emulator's ACR roles: the app's import role only pulls), and is readable
by an identity that may only pull (a cluster's). Roles are restored after each test."""
from __future__ import annotations

import hashlib
import io
import json
import uuid
from importlib.resources import files

import httpx
import pytest
from azure.identity import ManagedIdentityCredential

from shared.cli.dispatch import main
from shared.errors import UpstreamError
from shared.handlers.publish import publish_trust_material
from shared.services import Services
from tests.fixture_paths import FIXTURES

pytestmark = [pytest.mark.usefixtures("clean_faults", "airlock_env"), pytest.mark.timeout(300)]

POLICY = FIXTURES / "trust" / "policy.yaml"
SIGSTAGE = files("sigstore._store").joinpath("https%3A%2F%2Ftuf-repo-cdn.sigstage.dev/trusted_root.json")
IMPORTER = "Container Registry Data Importer and Data Reader"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def repository():
    return f"airlock/trust-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def app_roles(stack):
    """Assign data-plane roles to the app's (system) identity for one test; unassigned afterwards."""
    app = stack.admin("GET", "/_devstack/roles")["system_client_id"]

    def assign(*roles: str) -> None:
        stack.admin("POST", "/_devstack/roles", {"client_id": app, "roles": list(roles)})

    yield assign
    stack.admin("POST", "/_devstack/roles", {"client_id": app, "roles": None})


@pytest.fixture
def cluster_identity(stack):
    """A user-assigned identity that may only pull (AcrPull), as an AKS kubelet or Ratify's would."""
    client_id = str(uuid.uuid4())
    stack.admin("POST", "/_devstack/roles", {"client_id": client_id, "roles": ["AcrPull"]})
    yield client_id
    stack.admin("POST", "/_devstack/roles", {"client_id": client_id, "roles": None})


def services(stack, repository: str) -> Services:
    return Services.from_env({**stack.env, "TRUST_REPOSITORY": repository, "RETRY_BASE_SECONDS": "0.05"})


def pull_client(stack, repository: str, client_id: str) -> httpx.Client:
    """The data plane with a pull token of ``client_id`` (AAD token -> refresh token -> access token)."""
    with pytest.MonkeyPatch.context() as patch:
        stack.apply_env(patch)
        aad = ManagedIdentityCredential(client_id=client_id).get_token(
            "https://containerregistry.azure.net/.default").token
    http = httpx.Client(base_url=stack.arm_endpoint, verify=stack.ssl_context(), timeout=60)
    refresh = http.post("/oauth2/exchange", data={"grant_type": "access_token", "service": stack.login_server,
                                                  "access_token": aad}).json()["refresh_token"]
    access = http.post("/oauth2/token", data={"grant_type": "refresh_token", "service": stack.login_server,
                                              "scope": f"repository:{repository}:pull,push",
                                              "refresh_token": refresh}).json()["access_token"]
    http.headers["Authorization"] = f"Bearer {access}"
    return http


def roots() -> dict[str, bytes]:
    return {"acme-sigstore": SIGSTAGE.read_bytes()}


def test_the_material_is_refused_without_push_rights_and_readable_with_pull_rights_once_published(
        stack, repository, app_roles, cluster_identity):
    policy = POLICY.read_bytes()
    app_roles(IMPORTER)  # what infra/ gave the app before: import and read, no push
    with pytest.raises(UpstreamError) as refused:
        publish_trust_material(services(stack, repository), policy, trusted_roots=roots())
    assert refused.value.code == "PushDenied" and "AcrPush" in refused.value.message

    app_roles(IMPORTER, "AcrPush")  # infra/app/registry-access.bicep now assigns both
    result = publish_trust_material(services(stack, repository), policy, name="policy.yaml", trusted_roots=roots())
    assert result["repository"] == repository and result["reference"].endswith(f"/{repository}@{result['digest']}")
    assert result["tags"] == [f"trust-{result['digest'][7:23]}", "latest"]

    cluster = pull_client(stack, repository, cluster_identity)
    try:
        for tag in result["tags"]:
            manifest = cluster.get(f"/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert manifest.status_code == 200, manifest.text
            assert "sha256:" + hashlib.sha256(manifest.content).hexdigest() == result["digest"]
        document = json.loads(manifest.content)
        assert document["artifactType"] == "application/vnd.acr-airlock.trust.v1"
        blobs = {}
        for layer in document["layers"]:
            blob = cluster.get(f"/v2/{repository}/blobs/{layer['digest']}")
            assert blob.status_code == 200 and "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]
            blobs[layer["annotations"]["org.opencontainers.image.title"]] = blob.content
        assert [f["name"] for f in result["files"]] == list(blobs)
        assert blobs["trust-policy.yaml"] == policy
        index = json.loads(blobs["trust.json"])
        assert set(index["trusted_roots"]) == {"public-good", "acme-sigstore"}
        assert blobs[index["trusted_roots"]["acme-sigstore"]["file"]] == SIGSTAGE.read_bytes()
        # the cluster's identity pulls; it cannot push over the published material
        refused_push = cluster.put(f"/v2/{repository}/manifests/latest", content=manifest.content,
                                   headers={"Content-Type": OCI_MANIFEST})
        assert refused_push.status_code == 401
    finally:
        cluster.close()

    # publishing the same material again changes nothing
    again = publish_trust_material(services(stack, repository), policy, name="policy.yaml", trusted_roots=roots())
    assert again["digest"] == result["digest"]


def test_the_command_publishes_and_names_a_missing_trusted_root(stack, repository, monkeypatch, tmp_path):
    monkeypatch.setenv("TRUST_REPOSITORY", repository)
    out, err = io.StringIO(), io.StringIO()
    assert main(["trust", "publish", str(POLICY)], out=out, err=err) == 1
    assert "acme-sigstore" in err.getvalue() and "line" in err.getvalue()
    root = tmp_path / "acme.json"
    root.write_bytes(SIGSTAGE.read_bytes())
    out, err = io.StringIO(), io.StringIO()
    assert main(["trust", "publish", str(POLICY), "--trusted-root", f"acme-sigstore={root}", "--json"],
                out=out, err=err) == 0, err.getvalue()
    result = json.loads(out.getvalue())
    assert result["repository"] == repository and result["digest"].startswith("sha256:")
    assert main(["trust", "publish", str(POLICY), "--trusted-root", "acme-sigstore"], out=out, err=err) == 2
