"""Settings: parsing, errors naming every bad field, and the three lists kept in step."""
import json
from pathlib import Path

import pytest

from shared.config import SPECS, Settings
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"AZURE_SUBSCRIPTION_ID": "sub", "ACR_RESOURCE_GROUP": "rg", "ACR_NAME": "acr",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def test_defaults():
    s = Settings.from_env(BASE)
    assert s.concurrency == 8
    assert s.manifests_container == "manifests"
    assert "docker.io" in s.allowed_registries
    assert s.self_heal is True


def test_every_bad_setting_is_named_at_once():
    env = {**BASE, "SYNC_CONCURRENCY": "eight", "RETRY_MAX_ATTEMPTS": "99", "SELF_HEAL_ENABLED": "maybe",
           "ARM_ENDPOINT": "http://insecure"}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    for name in ("SYNC_CONCURRENCY", "RETRY_MAX_ATTEMPTS", "SELF_HEAL_ENABLED", "ARM_ENDPOINT"):
        assert name in info.value.message


def test_required_settings_reported():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({})
    for name in ("AZURE_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME", "AzureWebJobsStorage"):
        assert name in info.value.message


def test_offline_needs_nothing():
    assert Settings.from_env({}, offline=True).manifest_max_entries == 5000


def test_mirrors_parsed_and_malformed_rejected():
    s = Settings.from_env({**BASE, "SOURCE_REGISTRY_MIRRORS": "docker.io=127.0.0.1:5000, quay.io=mirror:443"})
    assert s.endpoint_for("docker.io") == "127.0.0.1:5000"
    assert s.endpoint_for("ghcr.io") == "ghcr.io"
    with pytest.raises(ConfigError, match="SOURCE_REGISTRY_MIRRORS"):
        Settings.from_env({**BASE, "SOURCE_REGISTRY_MIRRORS": "docker.io"})


def test_secret_not_in_repr():
    s = Settings.from_env({**BASE, "DOCKERHUB_USERNAME": "bob", "DOCKERHUB_TOKEN": "dckr_pat_SECRET"})
    assert "dckr_pat_SECRET" not in repr(s)
    assert s.secrets() == ("dckr_pat_SECRET",)


def test_sample_settings_list_every_setting():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert {s.name for s in SPECS} <= set(values)
    # the sample is a working local configuration
    Settings.from_env(values)


def test_docs_table_lists_every_setting_with_its_default():
    table = (ROOT / "docs" / "settings.md").read_text()
    for spec in SPECS:
        row = next((line for line in table.splitlines() if line.startswith(f"| `{spec.name}` |")), None)
        assert row is not None, spec.name
        if spec.default:
            assert f"`{spec.default}`" in row, spec.name


def test_default_agent_pool_must_be_a_pool_name():
    assert Settings.from_env({**BASE, "BUILD_DEFAULT_AGENT_POOL": "vnetpool"}).build_default_pool == "vnetpool"
    with pytest.raises(ConfigError, match="BUILD_DEFAULT_AGENT_POOL"):
        Settings.from_env({**BASE, "BUILD_DEFAULT_AGENT_POOL": "no pool!"})


GOOD_APPINSIGHTS = ("InstrumentationKey=00000000-0000-0000-0000-000000000001;"
                    "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/")


@pytest.mark.parametrize("value", [
    "InstrumentationKey=0f1e2d3c-SECRET",                        # not a GUID
    "InstrumentationKey=0f1e2d3c-SECRET;IngestionEndpoint",      # a pair without '='
    GOOD_APPINSIGHTS.replace("Instrumentation", "Instrumentatoin") + ";x=0f1e2d3c-SECRET",  # no key at all
    "Authorization=aad;" + GOOD_APPINSIGHTS + ";x=0f1e2d3c-SECRET",
])
def test_malformed_appinsights_connection_string_is_named_without_its_value(value):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, "APPLICATIONINSIGHTS_CONNECTION_STRING": value})
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in info.value.message
    assert "0f1e2d3c" not in info.value.message  # a secret setting: never quoted


def test_appinsights_connection_string_the_exporter_accepts_is_accepted():
    s = Settings.from_env({**BASE, "APPLICATIONINSIGHTS_CONNECTION_STRING": GOOD_APPINSIGHTS})
    assert s.appinsights_connection_string == GOOD_APPINSIGHTS


# -- source registry credentials (issue 20, #16) -------------------------------------------------------

PASSWORD_A, PASSWORD_B = "pw-a-9f2e41c7", "pw-b-0d6b3a55"


def test_every_source_registry_gets_its_own_credentials():
    s = Settings.from_env({**BASE, "SOURCE_REGISTRY_CREDENTIALS": "ghcr.io=GHCR, Registry.Example.com:5000=EX2",
                           "REGISTRY_GHCR_USERNAME": "bot", "REGISTRY_GHCR_PASSWORD": PASSWORD_A,
                           "REGISTRY_EX2_USERNAME": "puller", "REGISTRY_EX2_PASSWORD": PASSWORD_B,
                           "DOCKERHUB_USERNAME": "hubuser", "DOCKERHUB_TOKEN": "dckr_pat_x"})
    assert s.credentials_for("ghcr.io") == ("bot", PASSWORD_A)
    assert s.credentials_for("registry.example.com:5000") == ("puller", PASSWORD_B)  # hosts compare in lower case
    assert s.credentials_for("docker.io") == ("hubuser", "dckr_pat_x")  # DOCKERHUB_* still work
    assert s.credentials_for("quay.io") is None
    assert set(s.secrets()) == {PASSWORD_A, PASSWORD_B, "dckr_pat_x"}
    assert PASSWORD_A not in repr(s) and PASSWORD_B not in repr(s)


def test_docker_hub_aliases_name_docker_io():
    s = Settings.from_env({**BASE, "SOURCE_REGISTRY_CREDENTIALS": "index.docker.io=HUB",
                           "REGISTRY_HUB_USERNAME": "u", "REGISTRY_HUB_PASSWORD": PASSWORD_A})
    assert s.credentials_for("docker.io") == ("u", PASSWORD_A)


@pytest.mark.parametrize("env, fields", [
    ({"SOURCE_REGISTRY_CREDENTIALS": "ghcr.io=GHCR", "REGISTRY_GHCR_PASSWORD": PASSWORD_A},
     ["REGISTRY_GHCR_USERNAME"]),
    ({"SOURCE_REGISTRY_CREDENTIALS": "ghcr.io=GHCR", "REGISTRY_GHCR_USERNAME": PASSWORD_B},
     ["REGISTRY_GHCR_PASSWORD"]),
    ({"SOURCE_REGISTRY_CREDENTIALS": "ghcr.io=ghcr", "REGISTRY_ghcr_PASSWORD": PASSWORD_A},
     ["SOURCE_REGISTRY_CREDENTIALS"]),  # names are upper case
    ({"SOURCE_REGISTRY_CREDENTIALS": "ghcr.io=GH_CR", "REGISTRY_GH_CR_USERNAME": "u",
      "REGISTRY_GH_CR_PASSWORD": PASSWORD_A}, ["SOURCE_REGISTRY_CREDENTIALS"]),  # letters and digits (Key Vault)
    ({"SOURCE_REGISTRY_CREDENTIALS": "ghcr.io"}, ["SOURCE_REGISTRY_CREDENTIALS"]),
    ({"SOURCE_REGISTRY_CREDENTIALS": "https://ghcr.io/x=GH"}, ["SOURCE_REGISTRY_CREDENTIALS"]),
    ({"SOURCE_REGISTRY_CREDENTIALS": "ghcr.io=A,GHCR.io=B"}, ["SOURCE_REGISTRY_CREDENTIALS"]),  # listed twice
    ({"SOURCE_REGISTRY_CREDENTIALS": "ghcr.io=GH", "REGISTRY_GH_USERNAME": "u",
      "REGISTRY_GH_PASSWORD": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/gh)"},
     ["REGISTRY_GH_PASSWORD"]),  # an unresolved Key Vault reference is not a password
    ({"SOURCE_REGISTRY_CREDENTIALS": "docker.io=HUB", "REGISTRY_HUB_USERNAME": "u", "REGISTRY_HUB_PASSWORD": PASSWORD_A,
      "DOCKERHUB_USERNAME": "other", "DOCKERHUB_TOKEN": PASSWORD_B}, ["SOURCE_REGISTRY_CREDENTIALS"]),
    ({"SOURCE_ACR_RESOURCE_IDS": "other.azurecr.io=/subscriptions/s/resourceGroups/g/providers/"
                                 "Microsoft.Storage/storageAccounts/x"}, ["SOURCE_ACR_RESOURCE_IDS"]),
    ({"SOURCE_ACR_RESOURCE_IDS": "other.azurecr.io=/subscriptions/s/resourceGroups/g/providers/"
                                 "Microsoft.ContainerRegistry/registries/other",
      "SOURCE_REGISTRY_CREDENTIALS": "other.azurecr.io=OTHER", "REGISTRY_OTHER_USERNAME": "u",
      "REGISTRY_OTHER_PASSWORD": PASSWORD_A}, ["SOURCE_ACR_RESOURCE_IDS"]),  # one or the other
])
def test_bad_source_credentials_name_the_setting_and_never_a_password(env, fields):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, **env})
    for field in fields:
        assert field in info.value.message
    assert PASSWORD_A not in info.value.message and PASSWORD_B not in info.value.message


def test_source_acrs_by_resource_id():
    rid = "/subscriptions/1111/resourceGroups/src-rg/providers/Microsoft.ContainerRegistry/registries/sharedimages"
    s = Settings.from_env({**BASE, "SOURCE_ACR_RESOURCE_IDS": f"SharedImages.azurecr.io={rid}"})
    assert s.source_acr_id("sharedimages.azurecr.io") == rid
    assert s.source_acr_id("quay.io") is None and s.credentials_for("sharedimages.azurecr.io") is None


def test_serve_api_key_is_a_secret_of_some_length_never_quoted():
    key = "k3y-" + "x" * 28
    s = Settings.from_env({**BASE, "SERVE_API_KEY": key})
    assert s.serve_api_key == key and key in s.secrets() and key not in repr(s)
    for bad in ("short-key", "has a space in it, 32 chars long!"):
        with pytest.raises(ConfigError, match="SERVE_API_KEY") as info:
            Settings.from_env({**BASE, "SERVE_API_KEY": bad})
        assert bad not in info.value.message
    assert Settings.from_env(BASE).serve_api_key == ""
