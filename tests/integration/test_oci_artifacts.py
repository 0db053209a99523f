"""OCI artifacts listed in images.txt import like images: a Helm chart, with its real media types,
through the product's sync into the ACR stand-in (importImage copies it with skopeo)."""
from __future__ import annotations

import json
import ssl
import uuid

import httpx
import pytest

from devstack import oci
from shared.adapters.registry import MANIFEST_ACCEPT
from shared.handlers.imports import run_manifest
from shared.services import Services

pytestmark = pytest.mark.usefixtures("clean_faults", "airlock_env")


@pytest.fixture
def prefix():
    return f"oa{uuid.uuid4().hex[:8]}"


def test_the_planner_accepts_what_an_artifact_manifest_is_served_as():
    accepted = {t.strip() for t in MANIFEST_ACCEPT.split(",")}
    # Helm (and ORAS) store artifacts as OCI image manifests with their own config and layer
    # types; the OCI 1.1-rc artifact manifest is what some registries served for a while
    assert {oci.MEDIA_OCI_MANIFEST, "application/vnd.oci.artifact.manifest.v1+json"} <= accepted


def test_a_helm_chart_imports_like_an_image(stack, seeded, prefix):
    services = Services.from_env({**stack.env, "RETRY_BASE_SECONDS": "0.05"})
    chart = oci.build_chart("shop", "1.4.2", seed=prefix)
    manifest = json.loads(chart.raw)
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip"]
    digest = oci.push(chart, f"{stack.upstream_host}/{prefix}/charts/shop:1.4.2", cert_dir=stack.certs_dir)

    # the planner's HEAD, with its Accept types, reads the artifact's digest as the registry serves it
    head = httpx.head(f"https://{stack.upstream_host}/v2/{prefix}/charts/shop/manifests/1.4.2",
                      headers={"Accept": MANIFEST_ACCEPT},
                      verify=ssl.create_default_context(cafile=stack.env["REQUESTS_CA_BUNDLE"]))
    assert head.status_code == 200, head.text
    assert head.headers["Docker-Content-Digest"] == digest
    assert head.headers["Content-Type"].startswith(oci.MEDIA_OCI_MANIFEST)

    text = f"quay.io/{prefix}/charts/shop:1.4.2 => {prefix}/helm/shop\n"
    document = run_manifest(services, text, name="charts.txt", trigger="cli")
    assert document["status"] == "succeeded", document
    [entry] = document["entries"]
    assert (entry["action"], entry["result"], entry["source_digest"]) == ("new", "imported", digest)

    landed = oci.inspect_raw(f"{stack.backing_host}/{prefix}/helm/shop:1.4.2", tls_verify=False)
    assert landed == chart.raw  # byte for byte: same digest, same config and chart media types
    for descriptor in [manifest["config"], *manifest["layers"]]:
        blob = httpx.get(f"http://{stack.backing_host}/v2/{prefix}/helm/shop/blobs/{descriptor['digest']}")
        assert blob.status_code == 200 and oci.sha256_digest(blob.content) == descriptor["digest"]

    again = run_manifest(services, text, name="charts.txt", trigger="cli")
    assert [(e["action"], e["result"]) for e in again["entries"]] == [("unchanged", "unchanged")]
