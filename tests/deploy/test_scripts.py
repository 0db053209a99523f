"""scripts/postdeploy.sh, scripts/smoke.sh and scripts/preprovision.sh, run with stand-ins for az, azd, curl
(tests/deploy/shims.py): they act on the azd environment's subscription and URLs, never on the Azure
CLI's default subscription or a host name guessed from the app's name."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.deploy import bicep
from tests.deploy.shims import Shims, assert_in_subscription, option

ROOT = Path(__file__).resolve().parents[2]
MAIN = bicep.read(ROOT / "infra" / "main.bicep")
AZD_SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
ACR_SUBSCRIPTION = "99999999-8888-7777-6666-555555555555"
# Flex Consumption apps get regional host names, not <app name>.azurewebsites.net
APP_URL = "https://func-abc123-h7d2cfe6a0b1c2d3.eastus-01.azurewebsites.net"


def azd_values() -> dict[str, str]:
    """What `azd env get-values` holds after `azd up`: every output of main.bicep, plus azd's own."""
    values = {name: f"value-of-{name}" for name in bicep.outputs(MAIN)}
    values.update({
        "AZURE_ENV_NAME": "airlock-test", "AZURE_SUBSCRIPTION_ID": AZD_SUBSCRIPTION,
        "AZURE_RESOURCE_GROUP": "rg-airlock-test", "AZURE_FUNCTION_APP_NAME": "func-abc123",
        "AZURE_FUNCTION_APP_URL": APP_URL, "ACR_SUBSCRIPTION_ID": ACR_SUBSCRIPTION,
    })
    return values


def test_postdeploy_deploys_into_the_azd_subscription_and_wakes_the_app_at_its_url(tmp_path):
    shims = Shims.create(tmp_path / "bin", ["az", "curl", "sleep"], [
        # the host has no extension keys on the first look, then has them
        {"tool": "az", "prefix": ["rest"], "responses": [{"stdout": "false\n"}, {"stdout": "true\n"}]},
    ])
    done = shims.run(["sh", "scripts/postdeploy.sh"], shims.env(**azd_values()), ROOT)
    assert done.returncode == 0, done.stderr
    az = shims.calls("az")
    assert [c["argv"][0] for c in az] == ["rest", "rest", "deployment"]
    for call in az:
        assert_in_subscription(call, AZD_SUBSCRIPTION)
    deployment = az[-1]["argv"]
    assert option(deployment, "--template-file") == "infra/subscriptions.bicep"
    assert option(deployment, "--resource-group") == "rg-airlock-test"
    [wake] = shims.calls("curl")
    assert wake["argv"][-1].startswith(APP_URL), wake["argv"]
    assert "func-abc123.azurewebsites.net" not in " ".join(wake["argv"])


def test_postdeploy_names_the_subscription_in_its_advice_when_the_host_never_starts(tmp_path):
    shims = Shims.create(tmp_path / "bin", ["az", "curl", "sleep"], [
        {"tool": "az", "prefix": ["rest"], "responses": [{"stdout": "false\n"}]},
    ])
    done = shims.run(["sh", "scripts/postdeploy.sh"], shims.env(**azd_values()), ROOT)
    assert done.returncode == 1
    assert len(shims.calls("az")) == 60 and not any(c["argv"][0] == "deployment" for c in shims.calls("az"))
    advice = re.search(r"az functionapp [^\n]*", done.stderr).group(0)
    assert f"--subscription {AZD_SUBSCRIPTION}" in advice


def test_smoke_uses_the_azd_subscription_and_app_url_and_never_prints_the_key(tmp_path):
    # a copy of the script in a folder without .venv: `python3` is then the stand-in below
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "smoke.sh", tmp_path / "repo" / "scripts" / "smoke.sh")
    values = azd_values()
    key = "fUnCtIoNkEy-0123456789abcdef"
    shims = Shims.create(tmp_path / "bin", ["az", "azd", "curl", "python3"], [
        {"tool": "azd", "prefix": ["env", "get-values"],
         "responses": [{"stdout": "".join(f'{k}="{v}"\n' for k, v in values.items())}]},
        {"tool": "az", "prefix": ["functionapp", "keys", "list"], "responses": [{"stdout": key + "\n"}]},
        {"tool": "curl", "responses": [{"stdout": '{"status": "ok"}\n200'}]},
    ])
    done = shims.run(["bash", "scripts/smoke.sh"], shims.env(), tmp_path / "repo")
    assert done.returncode == 0, done.stderr
    az = shims.calls("az")
    assert [c["argv"][:2] for c in az] == [["functionapp", "keys"], ["storage", "blob"]]
    for call in az:
        assert_in_subscription(call, AZD_SUBSCRIPTION)
    [health] = shims.calls("curl")
    assert health["argv"][-1] == f"{APP_URL}/api/health"
    [wait] = shims.calls("python3")
    assert wait["argv"][:4] == ["-m", "shared", "runs", "wait"]
    # the command line's settings: the registry's subscription, which may differ from azd's
    assert wait["env"]["AZURE_SUBSCRIPTION_ID"] == ACR_SUBSCRIPTION
    assert key not in done.stdout + done.stderr


REGISTRY = f"/subscriptions/{ACR_SUBSCRIPTION}/resourceGroups/rg-acr/providers/Microsoft.ContainerRegistry/" \
    "registries/acr1"


def preprovision(tmp_path, env: dict, topics: dict | None) -> tuple[Shims, object]:
    """scripts/preprovision.sh with `az eventgrid system-topic list` answering ``topics`` (None: it fails)."""
    listing = ({"exit": 1, "stderr": "ERROR: (AuthorizationFailed) no read access\n"} if topics is None else
               {"stdout": "".join(f"{name}\t{group}\t{source}\n" for name, (group, source) in topics.items())})
    shims = Shims.create(tmp_path / "bin", ["az", "azd"], [
        {"tool": "az", "prefix": ["eventgrid", "system-topic", "list"], "responses": [listing]},
    ])
    done = shims.run(["sh", "scripts/preprovision.sh"], shims.env(AZURE_SUBSCRIPTION_ID=AZD_SUBSCRIPTION, **env), ROOT)
    return shims, done


def env_set(shims: Shims) -> dict[str, str]:
    return {c["argv"][2]: c["argv"][3] for c in shims.calls("azd") if c["argv"][:2] == ["env", "set"]}


def test_preprovision_finds_the_system_topic_an_existing_registry_already_has(tmp_path):
    """Event Grid allows one system topic per source: the hook finds the registry's (its source compared
    without case, as ARM ids are), in the registry's subscription, and hands its name and resource group to
    the templates through the azd environment (ACR_SYSTEM_TOPIC_NAME, ACR_SYSTEM_TOPIC_RESOURCE_GROUP)."""
    shims, done = preprovision(tmp_path, {"ACR_RESOURCE_ID": REGISTRY}, {
        "st-other-1a2b": ("rg-data", f"/subscriptions/{ACR_SUBSCRIPTION}/resourceGroups/rg-data/providers/"
                                     "Microsoft.Storage/storageAccounts/data1"),
        "acr1-9f8e7d6c": ("rg-events", REGISTRY.lower().replace("resourcegroups", "resourceGroups")),
    })
    assert done.returncode == 0, done.stderr
    [listing] = shims.calls("az")
    assert_in_subscription(listing, ACR_SUBSCRIPTION)
    assert env_set(shims) == {"ACR_SYSTEM_TOPIC_NAME": "acr1-9f8e7d6c", "ACR_SYSTEM_TOPIC_RESOURCE_GROUP": "rg-events"}
    assert "acr1-9f8e7d6c" in done.stdout


def test_preprovision_clears_a_topic_that_is_gone_and_leaves_a_known_one_alone(tmp_path):
    shims, done = preprovision(tmp_path / "gone", {"ACR_RESOURCE_ID": REGISTRY, "ACR_SYSTEM_TOPIC_NAME": "old",
                                                   "ACR_SYSTEM_TOPIC_RESOURCE_GROUP": "rg-old"}, {})
    assert done.returncode == 0, done.stderr
    assert env_set(shims) == {"ACR_SYSTEM_TOPIC_NAME": "", "ACR_SYSTEM_TOPIC_RESOURCE_GROUP": ""}
    shims, done = preprovision(tmp_path / "same", {"ACR_RESOURCE_ID": REGISTRY, "ACR_SYSTEM_TOPIC_NAME": "acr1-9f",
                                                   "ACR_SYSTEM_TOPIC_RESOURCE_GROUP": "rg-acr"},
                               {"acr1-9f": ("rg-acr", REGISTRY)})
    assert done.returncode == 0 and env_set(shims) == {}


def test_preprovision_without_an_existing_registry_or_without_read_access(tmp_path):
    shims, done = preprovision(tmp_path / "new", {}, {})
    assert done.returncode == 0 and shims.calls() == []
    # no right to list topics in the registry's subscription: the values set by hand stand, with a warning
    shims, done = preprovision(tmp_path / "denied", {"ACR_RESOURCE_ID": REGISTRY, "ACR_SYSTEM_TOPIC_NAME": "mine"},
                               None)
    assert done.returncode == 0 and env_set(shims) == {}
    assert "ACR_SYSTEM_TOPIC_NAME" in done.stderr and "mine" in done.stderr


def test_preprovision_rejects_a_registry_id_that_is_not_one(tmp_path):
    shims, done = preprovision(tmp_path, {"ACR_RESOURCE_ID": "/subscriptions/x/resourceGroups/rg/providers/"
                                                             "Microsoft.Storage/storageAccounts/st1"}, {})
    assert done.returncode != 0 and "ACR_RESOURCE_ID" in done.stderr and shims.calls() == []
