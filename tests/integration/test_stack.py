"""The local stand-in itself: processes, TLS, storage, registries, seeded images, events, stop."""
from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import json
import logging
import os
import ssl
import time
import uuid
from urllib.parse import urlencode

import certifi
import pytest

from devstack import oci
from devstack.stack import ENV_KEYS, SECRET_ENV_KEYS, Stack, group_alive, pid_alive, port_open

pytestmark = pytest.mark.timeout(180)


def _get(stack, port: int, path: str, *, tls: bool, context=None, headers=None) -> tuple[int, dict, bytes]:
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context or stack.ssl_context())
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _upstream_blob(stack, repo: str, digest: str) -> bytes:
    status, _, body = _get(stack, stack.upstream_port, f"/v2/{repo}/blobs/{digest}", tls=True)
    assert status == 200, (repo, digest, status)
    assert oci.sha256_digest(body) == digest
    return body


def _assert_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 5
    while any(pid_alive(p) or group_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        assert not pid_alive(pid), f"pid {pid} still alive"
        assert not group_alive(pid), f"process group {pid} still has members"
        assert not os.path.exists(f"/proc/{pid}"), f"/proc/{pid} still there"


# --- the running stack -------------------------------------------------------------------------


def test_stack_is_up_with_env(stack):
    assert stack.running
    assert stack.startup_seconds is not None and 0 < stack.startup_seconds < 60
    assert set(ENV_KEYS) <= set(stack.env)
    assert all(stack.env[k] for k in ENV_KEYS)
    up = stack.upstream_host
    assert stack.env["DEVSTACK_UPSTREAM"] == up and up.startswith("127.0.0.1:")
    mirrors = dict(pair.split("=", 1) for pair in stack.env["SOURCE_REGISTRY_MIRRORS"].split(","))
    assert mirrors == {r: up for r in ("docker.io", "quay.io", "registry.k8s.io", "mcr.microsoft.com", "ghcr.io")}
    assert stack.env["ARM_ENDPOINT"].startswith("https://127.0.0.1:")
    assert stack.env["IDENTITY_ENDPOINT"] == stack.env["ARM_ENDPOINT"] + "/msi/token"
    assert stack.env["DEVSTACK_BACKING"] == stack.backing_url
    assert stack.env["DEVSTACK_UPSTREAM_AUTH"] == stack.upstream_auth_host != up
    assert stack.env["DEVSTACK_UPSTREAM_AUTH_USER"] == stack.upstream_auth_user
    assert stack.env["DEVSTACK_UPSTREAM_AUTH_PASSWORD"] == stack.upstream_auth_password
    assert len(stack.upstream_auth_password) >= 24
    # the printable form hides the password
    masked = dict(line.split("=", 1) for line in stack.env_text(mask_secrets=True).splitlines())
    assert masked == {**stack.env, **{k: "***" for k in SECRET_ENV_KEYS}}
    assert os.path.isfile(stack.env["REQUESTS_CA_BUNDLE"])
    assert os.path.isfile(os.path.join(stack.env["DEVSTACK_CERTS_DIR"], "ca.crt"))
    # The env file says the same, one KEY=VALUE per line.
    lines = stack.env_path.read_text().splitlines()
    assert dict(line.split("=", 1) for line in lines) == stack.env
    assert oct(stack.env_path.stat().st_mode & 0o777) == "0o600"
    # Every child listens on loopback only.
    for port in (stack.blob_port, stack.queue_port, stack.table_port, stack.upstream_port, stack.upstream_auth_port,
                 stack.backing_port):
        assert port_open(port)


def test_airlock_env_fixture_applies_env(airlock_env, stack):
    for key, value in stack.env.items():
        assert os.environ[key] == value
    assert airlock_env == stack.env


def test_apply_env_to_a_mapping(stack):
    target: dict[str, str] = {}
    assert stack.apply_env(target) is target
    assert target == stack.env


def test_azurite_blob_roundtrip(stack):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(stack.env["AzureWebJobsStorage"])
    assert service.url.startswith(f"http://127.0.0.1:{stack.blob_port}/devstoreaccount1")
    name = f"devstack-{uuid.uuid4().hex[:12]}"
    container = service.create_container(name)
    try:
        container.upload_blob("hello/images.txt", b"docker.io/library/nginx:1.27\n")
        assert container.download_blob("hello/images.txt").readall() == b"docker.io/library/nginx:1.27\n"
        assert [b.name for b in container.list_blobs()] == ["hello/images.txt"]
    finally:
        container.delete_container()


def test_azurite_queue_and_table_ports_answer(stack):
    for port in (stack.queue_port, stack.table_port):
        status, _, _ = _get(stack, port, "/devstoreaccount1?comp=list", tls=False)
        assert status in (200, 400, 403)  # an Azure Storage answer, not a refused connection


def test_both_registries_answer_v2(stack):
    status, headers, _ = _get(stack, stack.upstream_port, "/v2/", tls=True)
    assert status == 200
    assert headers.get("Docker-Distribution-Api-Version") == "registry/2.0"
    status, headers, _ = _get(stack, stack.backing_port, "/v2/", tls=False)
    assert status == 200
    assert headers.get("Docker-Distribution-Api-Version") == "registry/2.0"


def test_upstream_tls_verifies_only_with_local_ca(stack):
    status, _, _ = _get(stack, stack.upstream_port, "/v2/", tls=True, context=stack.ssl_context())
    assert status == 200
    public_only = ssl.create_default_context(cafile=certifi.where())
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(stack, stack.upstream_port, "/v2/", tls=True, context=public_only)
    # skopeo: verified with the certs dir, refused without it.
    layout = oci.build_image("devstack/tls-check", seed="tls")
    oci.push(layout, f"{stack.upstream_host}/devstack/tls-check:1", cert_dir=stack.certs_dir)
    with pytest.raises(oci.OciError, match="certificate"):
        oci.inspect_raw(f"{stack.upstream_host}/devstack/tls-check:1")


def test_backing_registry_is_plain_http(stack):
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
        _get(stack, stack.backing_port, "/v2/", tls=True)


# --- images ------------------------------------------------------------------------------------


def test_build_is_deterministic(tmp_path):
    a = oci.build_layout("library/nginx", platforms=oci.MULTI, layers=3, seed="1.27", out_dir=tmp_path / "a")
    b = oci.build_layout("library/nginx", platforms=oci.MULTI, layers=3, seed="1.27", out_dir=tmp_path / "b")
    assert a.digest == b.digest and a.raw == b.raw
    files_a = sorted(p.name for p in (tmp_path / "a" / "blobs" / "sha256").iterdir())
    files_b = sorted(p.name for p in (tmp_path / "b" / "blobs" / "sha256").iterdir())
    assert files_a == files_b
    for name in files_a:
        data = (tmp_path / "a" / "blobs" / "sha256" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == name
        assert data == (tmp_path / "b" / "blobs" / "sha256" / name).read_bytes()
    # A new seed is a new version: every digest changes.
    c = oci.build_layout("library/nginx", platforms=oci.MULTI, layers=3, seed="1.28", out_dir=tmp_path / "c")
    assert c.digest != a.digest
    assert not (set(c.images[0].layer_digests) & set(a.images[0].layer_digests))
    # The cached builder gives the same digest as an uncached build.
    assert oci.build_image("library/nginx", platforms=oci.MULTI, layers=3, seed="1.27").digest == a.digest


def test_layout_is_a_valid_oci_layout(tmp_path):
    lay = oci.build_layout("library/busybox", seed="x", out_dir=tmp_path)
    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "index.json").read_text())
    (desc,) = index["manifests"]
    assert desc["digest"] == lay.digest and desc["mediaType"] == oci.MEDIA_OCI_MANIFEST
    assert desc["annotations"][oci.REF_ANNOTATION] == lay.ref
    manifest = json.loads(lay.raw)
    assert len(manifest["layers"]) == 3
    config = json.loads((tmp_path / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_bytes())
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert len(config["history"]) == 3
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        blob = (tmp_path / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()
        assert blob[:2] == b"\x1f\x8b" and blob[4:8] == b"\0\0\0\0"  # gzip, mtime 0
        assert oci.sha256_digest(gzip.decompress(blob)) == diff_id


def test_seeding_pushes_the_catalogue(stack, seeded):
    assert set(seeded) == {name for name, _ in oci.CATALOGUE}
    for name, platforms in oci.CATALOGUE:
        layout = oci.catalogue_image(name)
        assert seeded[name] == layout.digest
        repo, tag = name.rsplit(":", 1)
        raw = oci.inspect_raw(f"{stack.upstream_host}/{name}", cert_dir=stack.certs_dir)
        assert oci.sha256_digest(raw) == seeded[name]
        top = json.loads(raw)
        if len(platforms) > 1:
            assert top["mediaType"] == oci.MEDIA_OCI_INDEX
            assert len(top["manifests"]) == 2
            assert {(m["platform"]["os"], m["platform"]["architecture"]) for m in top["manifests"]} == {
                ("linux", "amd64"), ("linux", "arm64")}
            manifests = [json.loads(oci.inspect_raw(f"{stack.upstream_host}/{repo}@{m['digest']}",
                                                    cert_dir=stack.certs_dir)) for m in top["manifests"]]
            layer_sets = [frozenset(layer["digest"] for layer in m["layers"]) for m in manifests]
            assert not (layer_sets[0] & layer_sets[1]), "platforms must not share layers"
        else:
            assert top["mediaType"] == oci.MEDIA_OCI_MANIFEST
            manifests = [top]
        for manifest in manifests:
            assert len(manifest["layers"]) == 3
            config = json.loads(_upstream_blob(stack, repo, manifest["config"]["digest"]))
            assert len(config["rootfs"]["diff_ids"]) == 3
            for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
                assert oci.sha256_digest(gzip.decompress(_upstream_blob(stack, repo, layer["digest"]))) == diff_id
    # Seeding again is idempotent; a new seed gives new digests.
    assert oci.seed_upstream(stack) == seeded
    assert oci.seed_upstream(stack, force=True) == seeded


def test_new_version_of_a_tag_has_a_new_digest(stack, seeded):
    v2 = oci.catalogue_image("library/busybox:1.36", seed="2")
    assert v2.digest != seeded["library/busybox:1.36"]
    dest = f"{stack.upstream_host}/devstack/busybox-versions:1.36"
    assert oci.push(oci.catalogue_image("library/busybox:1.36"), dest, cert_dir=stack.certs_dir) == seeded[
        "library/busybox:1.36"]
    assert oci.push(v2, dest, cert_dir=stack.certs_dir) == v2.digest
    assert oci.sha256_digest(oci.inspect_raw(dest, cert_dir=stack.certs_dir)) == v2.digest


# --- the emulator ------------------------------------------------------------------------------


def _need_emulator(stack):
    if stack.emulator is None:
        pytest.skip("the stack runs without the ACR emulator")


def test_push_to_backing_emits_image_pushed_event(stack):
    _need_emulator(stack)
    batches: list[list[dict]] = []
    unsubscribe = stack.emulator.events.subscribe(batches.append)
    try:
        repo = f"devstack/events-{uuid.uuid4().hex[:8]}"
        layout = oci.build_image("devstack/events", seed=repo)
        digest = oci.push(layout, f"{stack.backing_host}/{repo}:v1", tls_verify=False)
        event = stack.emulator.events.wait_for(
            lambda e: e["eventType"] == "Microsoft.ContainerRegistry.ImagePushed"
            and e["data"]["target"].get("repository") == repo and e["data"]["target"].get("tag") == "v1",
            timeout=15)
        assert event["data"]["target"]["digest"] == digest
        assert event["data"]["target"]["mediaType"] == oci.MEDIA_OCI_MANIFEST
        assert event["subject"] == f"{repo}:v1"
        assert event["topic"].endswith(f"/registries/{stack.registry_name}")
        # Subscribers get the same events, in batches, off the request path.
        deadline = time.monotonic() + 5
        while not any(e["id"] == event["id"] for b in batches for e in b) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(e["id"] == event["id"] for b in batches for e in b)

        # Deleting the manifest from the backing registry raises ImageDeleted.
        conn = http.client.HTTPConnection("127.0.0.1", stack.backing_port, timeout=10)
        try:
            conn.request("DELETE", f"/v2/{repo}/manifests/{digest}")
            assert conn.getresponse().status == 202
        finally:
            conn.close()
        deleted = stack.emulator.events.wait_for(
            lambda e: e["eventType"] == "Microsoft.ContainerRegistry.ImageDeleted"
            and e["data"]["target"].get("repository") == repo, timeout=15)
        assert deleted["data"]["target"]["digest"] == digest
    finally:
        unsubscribe()


def test_managed_identity_token_with_the_env(stack, airlock_env):
    _need_emulator(stack)
    from azure.identity import ManagedIdentityCredential

    token = ManagedIdentityCredential().get_token("https://management.azure.com/.default")
    assert token.token and token.expires_on > time.time()


def test_clean_faults_fixture(clean_faults):
    clean_faults.clear_faults()  # idempotent


# --- the token-auth upstream ------------------------------------------------------------------

ACCEPT_MANIFESTS = {"Accept": f"{oci.MEDIA_OCI_MANIFEST}, {oci.MEDIA_OCI_INDEX}"}


def _token(stack, *scopes: str, creds: str | None = None, service: str | None = None,
           authorization: str | None = None) -> tuple[int, dict, dict]:
    query = urlencode([("service", service or stack.upstream_auth_service), *(("scope", s) for s in scopes)])
    headers = {"Authorization": authorization} if authorization else {}
    if creds:
        headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
    status, response_headers, body = _get(stack, stack.emulator_port, f"/_devstack/upstream-token?{query}", tls=True,
                                          headers=headers)
    return status, {k.lower(): v for k, v in response_headers.items()}, json.loads(body)


def _manifest_status(stack, repo: str, ref: str, token: str | None) -> int:
    headers = dict(ACCEPT_MANIFESTS, **({"Authorization": f"Bearer {token}"} if token else {}))
    status, _, _ = _get(stack, stack.upstream_auth_port, f"/v2/{repo}/manifests/{ref}", tls=True, headers=headers)
    return status


def test_token_auth_registry_challenges_for_the_emulator_realm(stack):
    status, headers, _ = _get(stack, stack.upstream_auth_port, "/v2/", tls=True)
    assert status == 401
    challenge = headers["Www-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{stack.upstream_token_realm}"' in challenge
    assert f'service="{stack.upstream_auth_service}"' in challenge
    assert stack.upstream_token_realm == f"{stack.arm_endpoint}/_devstack/upstream-token"
    status, headers, _ = _get(stack, stack.upstream_auth_port, "/v2/private/app/manifests/1.0", tls=True)
    assert status == 401 and 'scope="repository:private/app:pull"' in headers["Www-Authenticate"]


def test_upstream_token_service_grants(stack, seeded_auth):
    _need_emulator(stack)
    # the user gets what it asks for, on any repository, several scopes at once
    status, headers, body = _token(stack, "repository:private/app:pull,push", "repository:library/redis:pull",
                                   creds=stack.upstream_auth_creds)
    assert status == 200 and body["token"] == body["access_token"] and body["expires_in"] >= 60
    assert headers.get("cache-control") == "no-store"
    claims = json.loads(base64.urlsafe_b64decode(body["token"].split(".")[1] + "=="))
    assert claims["access"] == [{"type": "repository", "name": "private/app", "actions": ["pull", "push"]},
                                {"type": "repository", "name": "library/redis", "actions": ["pull"]}]
    assert (claims["iss"], claims["aud"], claims["sub"]) == (
        stack.upstream_auth_issuer, stack.upstream_auth_service, stack.upstream_auth_user)
    assert claims["nbf"] <= claims["iat"] < claims["exp"] and claims["jti"]
    assert _manifest_status(stack, "private/app", "1.0", body["token"]) == 200
    assert _manifest_status(stack, "library/redis", "7", body["token"]) == 200
    # anonymous: a token, but pull only and only under public/
    status, _, body = _token(stack, "repository:private/app:pull")
    assert status == 200 and json.loads(base64.urlsafe_b64decode(body["token"].split(".")[1] + "=="))[
        "access"] == [{"type": "repository", "name": "private/app", "actions": []}]
    assert _manifest_status(stack, "private/app", "1.0", body["token"]) == 401
    status, _, body = _token(stack, "repository:public/hello:pull,push")
    claims = json.loads(base64.urlsafe_b64decode(body["token"].split(".")[1] + "=="))
    assert claims["access"] == [{"type": "repository", "name": "public/hello", "actions": ["pull"]}]
    assert claims["sub"] == ""
    assert _manifest_status(stack, "public/hello", "latest", body["token"]) == 200
    # wrong password, unknown user, another scheme: 401 with a Basic challenge and no token
    for creds in (f"{stack.upstream_auth_user}:nope", f"someone:{stack.upstream_auth_password}"):
        status, headers, body = _token(stack, "repository:public/hello:pull", creds=creds)
        assert status == 401 and "token" not in body and headers["www-authenticate"].startswith("Basic ")
    status, _, body = _token(stack, "repository:public/hello:pull", authorization="Bearer abc")
    assert status == 401 and "token" not in body
    # a service this issuer does not serve
    status, _, body = _token(stack, "repository:public/hello:pull", service="registry.docker.io")
    assert status == 400 and body["errors"][0]["code"] == "INVALID_REQUEST"
    # the request log (admin endpoint) shows who asked, never a token
    log = stack.admin("GET", "/_devstack/upstream-token/requests")
    assert log and {"status", "outcome", "account", "scopes", "access"} <= set(log[-1])
    assert all("token" not in entry for entry in log)


def test_registry_verifies_the_tokens(stack, seeded_auth):
    """distribution's checks, as the emulator's tokens must meet them: signature by the key of the
    rootcertbundle (x5c chain or libtrust kid), iss, aud, exp/nbf and the access claim."""
    import trustme

    from devstack.emulator.upstream_auth import UpstreamTokenService

    _need_emulator(stack)
    issuer = stack.emulator.upstream_tokens
    pull = [{"type": "repository", "name": "private/app", "actions": ["pull"]}]
    now = time.time()
    assert _manifest_status(stack, "private/app", "1.0", issuer.issue("u", pull)) == 200
    assert _manifest_status(stack, "private/app", "1.0", issuer.issue("u", pull, with_x5c=False)) == 200
    refused = {
        "no token": None,
        "another audience": issuer.issue("u", pull, aud="registry.docker.io"),
        "another issuer": issuer.issue("u", pull, iss="someone-else"),
        "expired": issuer.issue("u", pull, now=now - 3600),
        "not yet valid": issuer.issue("u", pull, nbf=int(now) + 3600),
        "another repository": issuer.issue("u", [{"type": "repository", "name": "private/other",
                                                  "actions": ["pull"]}]),
        "no pull action": issuer.issue("u", [{"type": "repository", "name": "private/app", "actions": ["push"]}]),
    }
    signer = trustme.CA().issue_cert("stranger.invalid")
    stranger = UpstreamTokenService(service=stack.upstream_auth_service, issuer=stack.upstream_auth_issuer,
                                    private_key_pem=signer.private_key_pem.bytes(),
                                    certificate_pem=signer.cert_chain_pems[0].bytes(), username="u", password="p")
    refused["foreign key (x5c)"] = stranger.issue("u", pull)
    refused["foreign key (kid)"] = stranger.issue("u", pull, with_x5c=False)
    for what, token in refused.items():
        assert _manifest_status(stack, "private/app", "1.0", token) == 401, what


# --- start/stop ---------------------------------------------------------------------------------


def test_stop_leaves_no_process_behind(caplog):
    caplog.set_level(logging.DEBUG)
    with Stack(with_emulator=os.environ.get("DEVSTACK_NO_EMULATOR") != "1") as st:
        pids = st.pids
        workdir = st.workdir
        ports = [st.blob_port, st.queue_port, st.table_port, st.upstream_port, st.upstream_auth_port, st.backing_port]
        if st.emulator is not None:
            ports.append(st.emulator_port)
        assert len(pids) == 4 and all(pid_alive(p) for p in pids)
        assert set(st.children) == {"azurite", "registry-upstream", "registry-upstream-auth", "registry-backing"}
        assert all(port_open(p) for p in ports)
        # the password is in the env file (0600) and nowhere else in the work folder
        secret = st.upstream_auth_password.encode()
        holders = [p for p in workdir.rglob("*") if p.is_file() and secret in p.read_bytes()]
        assert holders == [st.env_path]
    assert not st.running
    assert st.upstream_auth_password not in caplog.text
    _assert_gone(pids)
    assert not any(port_open(p) for p in ports)
    assert not workdir.exists()
    st.stop()  # idempotent


class _FailingStack(Stack):
    def _make_certs(self) -> None:  # runs after Azurite was spawned
        raise RuntimeError("boom while starting")


def test_failed_start_cleans_up():
    st = _FailingStack(with_emulator=False)
    with pytest.raises(RuntimeError, match="boom"):
        st.start()
    assert st.pids, "Azurite should have been spawned before the failure"
    _assert_gone(st.pids)
    assert not st.workdir.exists()
