"""Source registry credentials in the import request and the reader each registry gets (issue 20, #16)."""
import pytest

from shared.adapters.acr import ImportRequest
from shared.adapters.registry import SourceRegistry
from shared.adapters.registry_auth import AcrTokenAuth, DockerTokenAuth
from shared.config import Settings
from shared.services import Services

BASE = {"AZURE_SUBSCRIPTION_ID": "sub", "ACR_RESOURCE_GROUP": "rg", "ACR_NAME": "acr",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
RID = "/subscriptions/1111/resourceGroups/src-rg/providers/Microsoft.ContainerRegistry/registries/shared"
TARGETS = dict(source_image="team/app@sha256:" + "a" * 64, target_tags=["team/app:1.0"], untagged_repositories=[],
               mode="NoForce")


def test_an_acr_source_is_named_by_resource_id_without_address_or_credentials():
    body = ImportRequest(registry_uri=None, resource_id=RID, username="u", password="p", **TARGETS).body()
    assert body["source"] == {"resourceId": RID, "sourceImage": TARGETS["source_image"]}  # as ARM's example
    assert body["targetTags"] == ["team/app:1.0"] and body["mode"] == "NoForce"


def test_a_registry_source_carries_its_credentials():
    body = ImportRequest(registry_uri="ghcr.io", username="bot", password="pw", **TARGETS).body()
    assert body["source"] == {"registryUri": "ghcr.io", "sourceImage": TARGETS["source_image"],
                              "credentials": {"username": "bot", "password": "pw"}}
    assert "pw" not in repr(ImportRequest(registry_uri="ghcr.io", username="bot", password="pw", **TARGETS))


@pytest.fixture
def services():
    env = {**BASE, "SOURCE_REGISTRY_CREDENTIALS": "ghcr.io=GHCR", "REGISTRY_GHCR_USERNAME": "bot",
           "REGISTRY_GHCR_PASSWORD": "pw-1", "SOURCE_ACR_RESOURCE_IDS": f"shared.azurecr.io={RID}"}
    return Services(Settings.from_env(env))


def test_each_registry_gets_its_reader(services):
    source: SourceRegistry = services.source
    ghcr = source._reader("ghcr.io")._auth
    assert isinstance(ghcr, DockerTokenAuth) and ghcr._credentials == ("bot", "pw-1")
    quay = source._reader("quay.io")._auth
    assert isinstance(quay, DockerTokenAuth) and quay._credentials is None
    acr = source._reader("shared.azurecr.io")._auth
    assert isinstance(acr, AcrTokenAuth)  # the app's identity, no password
    assert services.acr_source_for("shared.azurecr.io") == RID and services.credentials_for("shared.azurecr.io") is None
