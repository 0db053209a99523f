"""infra/ held to what the code needs, by reading the templates (no Bicep compiler can be had here).

What is required is derived from the code, not listed here: every %SETTING% a binding of
function_app.py names, every setting shared/config.py requires (no default), the identity-based
connection settings each binding's ``connection`` needs, the event-driven functions and the event
types shared/core/events.py handles. So a function or setting added later is held to the same rules.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy import bicep

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATES = sorted(INFRA.rglob("*.bicep"))
MAIN = bicep.read(INFRA / "main.bicep")
SUBSCRIPTIONS = bicep.read(INFRA / "subscriptions.bicep")
SETTING_REF = re.compile(r"%([A-Za-z0-9_]+)%")
GUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
# settings read by libraries or the platform rather than by shared/config.py
PLATFORM_SETTINGS = {
    "AZURE_CLIENT_ID": "azure-identity: the user-assigned identity DefaultAzureCredential uses",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "the Functions host and OpenTelemetry exporters",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Entra ID ingestion (Application Insights local auth is off)",
    "PYTHON_ENABLE_OPENTELEMETRY": "the Python worker passes the host's trace context to the app (docs/operations.md)",
    "PYTHON_THREADPOOL_THREAD_COUNT": "the Python worker's threads for synchronous functions (docs/architecture.md)",
}
# not to be set on Flex Consumption (its runtime lives in functionAppConfig), nor with shared keys off
FORBIDDEN_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
                      "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "AzureWebJobsStorage"}


@pytest.fixture(scope="module")
def index(registered) -> dict[str, dict]:
    """function name -> its bindings as the Functions host reads them (the app is indexed once per session)."""
    return {name: json.loads(f.get_function_json()) for name, f in registered.items()}


def trigger(function: dict) -> dict:
    [binding] = [b for b in function["bindings"] if b["type"].endswith("Trigger")]
    return binding


def app_settings() -> dict[str, str]:
    """Every app setting main.bicep gives the Function App: {name: value source text}."""
    settings = {}
    for name in ("appSettings", "secretSettings"):
        start = re.search(rf"^var {name}\s*=\s*", MAIN, re.M).end()
        line = MAIN[start:].split("\n", 1)[0]
        if "?" in line:  # cond ? {} : { ... }: the settings set when the condition allows
            start += line.rindex(": {") + 2
        settings.update(bicep.entries(bicep.balanced(MAIN, start)))
    return settings


def resolve(expression: str, text: str = MAIN):
    """A literal, or a param's literal default, or None."""
    value = bicep.literal(expression)
    if value is not None:
        return value
    declared = bicep.params(text).get(expression.strip())
    if declared and declared[1]:
        return bicep.literal(declared[1])
    return None


def required_settings(index: dict[str, dict]) -> dict[str, str]:
    """{setting: why}, derived from the code."""
    from shared.config import SPECS

    required = {}
    for name, function in index.items():
        for binding in function["bindings"]:
            for value in binding.values():
                for ref in SETTING_REF.findall(str(value)) if isinstance(value, str) else ():
                    required[ref] = f"{name} binding names %{ref}% (the host refuses to start without it)"
            connection = binding.get("connection")
            if connection:
                service = {"blobTrigger": "blob", "blob": "blob", "queueTrigger": "queue", "queue": "queue",
                           "table": "table"}.get(binding["type"], "blob")
                for suffix in (f"__{service}ServiceUri", "__credential", "__clientId"):
                    required[connection + suffix] = f"{name} connection {connection} (identity-based)"
    for spec in SPECS:
        if spec.default is None:
            required[spec.name] = "shared/config.py requires it (no default)"
    # the host's own storage (AzureWebJobsStorage) with identity: blob, queue and table
    for service in ("blob", "queue", "table"):
        required[f"AzureWebJobsStorage__{service}ServiceUri"] = "the Functions host's own storage"
    required["AzureWebJobsStorage__credential"] = required["AzureWebJobsStorage__clientId"] = "user-assigned identity"
    required["AZURE_CLIENT_ID"] = PLATFORM_SETTINGS["AZURE_CLIENT_ID"]
    required["APPLICATIONINSIGHTS_CONNECTION_STRING"] = "Application Insights (the issue; the host's telemetry)"
    return required


# -- settings ---------------------------------------------------------------------------------

def test_every_required_setting_is_set(index):
    settings = app_settings()
    missing = {name: why for name, why in required_settings(index).items() if name not in settings}
    assert not missing, "infra/main.bicep does not set:\n" + "\n".join(f"  {k}: {v}" for k, v in missing.items())
    assert bicep.literal(settings["AzureWebJobsStorage__credential"]) == "managedidentity"


def test_every_setting_set_is_known(index):
    from shared.config import SPECS

    known = {s.name for s in SPECS} | set(PLATFORM_SETTINGS) | set(required_settings(index))
    unknown = sorted(set(app_settings()) - known)
    assert not unknown, f"infra/main.bicep sets settings nothing reads (typo?): {unknown}"
    forbidden = sorted(set(app_settings()) & FORBIDDEN_SETTINGS)
    assert not forbidden, f"not on Flex Consumption / with shared keys off: {forbidden}"


def test_settings_named_in_bindings_resolve_to_what_infra_creates(index):
    """%NAME% values: a container the storage module creates, a queue it creates, a valid NCRONTAB."""
    settings = app_settings()
    storage = next(b for b in bicep.blocks(MAIN) if b.symbol == "storage").body
    containers = bicep.find_key(storage, "containerNames")[0]
    queues = bicep.find_key(storage, "queueNames")[0]
    for name, function in index.items():
        binding = trigger(function)
        kind = binding["type"]
        for key, value in binding.items():
            for ref in SETTING_REF.findall(value) if isinstance(value, str) else ():
                expression = settings[ref]
                resolved = resolve(expression)
                assert resolved, f"{ref} = {expression}: not a literal or a param with a literal default"
                if kind == "blobTrigger" and key == "path" and value.startswith(f"%{ref}%/"):
                    assert expression in containers, f"{ref} ({expression}) is not a container infra creates"
                elif kind == "queueTrigger" and key == "queueName":
                    assert expression in queues, f"{ref} ({expression}) is not a queue infra creates"
                elif kind == "timerTrigger" and key == "schedule":
                    assert len(resolved.split()) == 6, f"{ref} = {resolved!r} is not a 6-field NCRONTAB"


def test_secrets_are_key_vault_references():
    """A secret setting is a Key Vault reference, or the output of a resource this template deploys
    (the Application Insights connection string): never a literal or a parameter's value."""
    from shared.config import SPECS

    settings = app_settings()
    for spec in SPECS:
        if spec.secret and spec.name in settings:
            value = settings[spec.name]
            assert value.startswith("'@Microsoft.KeyVault(SecretUri=") or re.fullmatch(r"\w+\.outputs\.\w+", value), \
                f"{spec.name} = {value}"
    assert "DOCKERHUB_TOKEN" in settings
    function = bicep.read(INFRA / "app" / "function.bicep")
    assert bicep.find_key(function, "keyVaultReferenceIdentity") == ["identityId"]
    assert "@secure" in bicep.decorators((INFRA / "main.bicep").read_text(), "dockerHubToken")


# -- the Function App ----------------------------------------------------------------------------

def supported_pythons() -> list[str]:
    import importlib.metadata

    requires = importlib.metadata.metadata("azure-functions")["Requires-Python"]
    ok = []
    for minor in range(8, 16):
        version = (3, minor)
        good = True
        for clause in requires.split(","):
            m = re.match(r"\s*(<=|>=|<|>|==)\s*(\d+)\.(\d+)", clause)
            bound = (int(m.group(2)), int(m.group(3)))
            good &= {"<": version < bound, "<=": version <= bound, ">": version > bound, ">=": version >= bound,
                     "==": version == bound}[m.group(1)]
        if good:
            ok.append(f"3.{minor}")
    return ok


def test_flex_consumption_python_version():
    function = bicep.read(INFRA / "app" / "function.bicep")
    plan = next(b for b in bicep.blocks(function) if b.target == "Microsoft.Web/serverfarms")
    assert "name: 'FC1'" in plan.body and "tier: 'FlexConsumption'" in plan.body
    runtime = bicep.find_key(function, "runtime")[0]
    assert "name: 'python'" in runtime and "version: pythonVersion" in runtime
    version = resolve("pythonVersion")
    # azure-functions' Requires-Python, and the README says which and why
    assert version in supported_pythons(), (version, supported_pythons())
    readme = (ROOT / "README.md").read_text()
    assert f"Python {version}" in readme and "Requires-Python" in readme
    site = next(b for b in bicep.blocks(function) if b.target == "Microsoft.Web/sites")
    assert "kind: 'functionapp,linux'" in site.body and "httpsOnly: true" in site.body
    assert "type: 'UserAssignedIdentity'" in site.body  # the deployment package, read with the identity


def test_monitoring_has_local_auth_disabled():
    monitoring = bicep.read(INFRA / "app" / "monitoring.bicep")
    insights = next(b for b in bicep.blocks(monitoring) if b.target == "Microsoft.Insights/components")
    workspace = next(b for b in bicep.blocks(monitoring) if b.target == "Microsoft.OperationalInsights/workspaces")
    assert "DisableLocalAuth: true" in insights.body and "WorkspaceResourceId: workspace.id" in insights.body
    assert "disableLocalAuth: true" in workspace.body


# -- storage, registry, network --------------------------------------------------------------------

def test_storage_has_shared_keys_off_and_every_container_and_queue():
    storage = bicep.read(INFRA / "app" / "storage.bicep")
    account = next(b for b in bicep.blocks(storage) if b.target == "Microsoft.Storage/storageAccounts")
    assert "allowSharedKeyAccess: false" in account.body
    assert "allowBlobPublicAccess: false" in account.body
    assert "defaultAction: vnetEnabled ? 'Deny' : 'Allow'" in account.body
    module = next(b for b in bicep.blocks(MAIN) if b.symbol == "storage").body
    containers = bicep.find_key(module, "containerNames")[0]
    for name in ("deploymentContainerName", "manifestsContainerName", "outcomesContainerName",
                 "deadLetterContainerName"):
        assert name in containers
    assert "runsQueueName" in bicep.find_key(module, "queueNames")[0]


def test_every_run_message_in_flight_has_a_worker_thread():
    """host.json lets an instance hold batchSize + newBatchThreshold run messages; the Python worker runs
    synchronous functions on PYTHON_THREADPOOL_THREAD_COUNT threads (its default, min(32, vCPUs + 4),
    is 5 on one vCPU): infra and the local sample give it at least as many."""
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    in_flight = queues["batchSize"] + queues["newBatchThreshold"]
    assert int(resolve(app_settings()["PYTHON_THREADPOOL_THREAD_COUNT"])) >= in_flight
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert int(sample["PYTHON_THREADPOOL_THREAD_COUNT"]) >= in_flight


def test_run_work_blobs_expire_after_every_late_delivery():
    """A lifecycle rule deletes the queued runs' working blobs, and only those, later than a queue
    message can still be delivered (7 days): a late delivery still finds its run's final marker."""
    storage = bicep.read(INFRA / "app" / "storage.bicep")
    [rule] = [b for b in bicep.blocks(storage) if b.target == "Microsoft.Storage/storageAccounts/managementPolicies"]
    assert "name: 'default'" in rule.body
    rules = dict(zip(bicep.find_key(rule.body, "prefixMatch"),
                     bicep.find_key(rule.body, "daysAfterModificationGreaterThan"), strict=True))
    assert rules["[runsWorkPrefix]"] == "runsWorkRetentionDays"
    assert all("runs-work" not in prefix and "runsWork" not in prefix for prefix in set(rules) - {"[runsWorkPrefix]"})
    assert int(bicep.params(storage)["runsWorkRetentionDays"][1]) > 7
    module = next(b for b in bicep.blocks(MAIN) if b.symbol == "storage").body
    assert bicep.find_key(module, "runsWorkPrefix") == ["'${outcomesContainerName}/runs-work/'"]
    from shared.handlers.runs import WORK

    assert WORK == "runs-work"


def test_signature_verdicts_expire_after_the_longest_reuse_the_app_allows():
    """A second lifecycle rule deletes cached signature verdicts (the app's TRUST_VERDICT_PREFIX under the
    outcomes container), and only once no TRUST_VERDICT_TTL_SECONDS the app accepts can still reuse them."""
    from shared.config import Settings
    from shared.errors import ConfigError

    storage = bicep.read(INFRA / "app" / "storage.bicep")
    [rule] = [b for b in bicep.blocks(storage) if b.target == "Microsoft.Storage/storageAccounts/managementPolicies"]
    rules = dict(zip(bicep.find_key(rule.body, "prefixMatch"),
                     bicep.find_key(rule.body, "daysAfterModificationGreaterThan"), strict=True))
    assert rules == {"[runsWorkPrefix]": "runsWorkRetentionDays", "[verdictsPrefix]": "verdictsRetentionDays"}
    module = next(b for b in bicep.blocks(MAIN) if b.symbol == "storage").body
    defaults = Settings.from_env({}, offline=True)
    assert "TRUST_VERDICT_PREFIX" not in app_settings()  # the app uses the default the rule names
    assert bicep.find_key(module, "verdictsPrefix") == [f"'${{outcomesContainerName}}/{defaults.trust_verdict_prefix}'"]
    days = int(bicep.params(storage)["verdictsRetentionDays"][1])
    assert Settings.from_env({"TRUST_VERDICT_TTL_SECONDS": str((days - 1) * 86400)}, offline=True)
    with pytest.raises(ConfigError, match="TRUST_VERDICT_TTL_SECONDS"):
        Settings.from_env({"TRUST_VERDICT_TTL_SECONDS": str(days * 86400)}, offline=True)


def test_registry_new_or_existing_with_trusted_services_bypass():
    registry = bicep.read(INFRA / "app" / "registry.bicep")
    body = next(b for b in bicep.blocks(registry) if b.target == "Microsoft.ContainerRegistry/registries").body
    assert "name: 'Premium'" in body
    assert "networkRuleBypassOptions: 'AzureServices'" in body  # importImage needs it with public access off
    assert "adminUserEnabled: false" in body
    assert "publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'" in body
    assert bicep.params(MAIN)["existingRegistryId"] == ("string", "''")
    assert "module registry 'app/registry.bicep' = if (newRegistry)" in MAIN


def test_vnet_integration_and_private_endpoints():
    network = bicep.read(INFRA / "app" / "network.bicep")
    assert "serviceName: 'Microsoft.App/environments'" in network  # Flex Consumption's delegation
    endpoints = bicep.var(network, "endpoints")
    for group in ("blob", "queue", "table", "vault", "registry"):
        assert f"group: '{group}'" in endpoints
    for zone in ("privatelink.blob.", "privatelink.queue.", "privatelink.table.", "privatelink.vaultcore.azure.net",
                 "privatelink.azurecr.io"):
        assert zone in endpoints
    types = {b.target for b in bicep.blocks(network)}
    assert {"Microsoft.Network/privateEndpoints", "Microsoft.Network/privateDnsZones",
            "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
            "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"} <= types
    vault = bicep.read(INFRA / "app" / "keyvault.bicep")
    assert "publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'" in vault
    assert "subnetId: vnetEnabled ? network.outputs.appSubnetId : ''" in MAIN


# -- roles -------------------------------------------------------------------------------------------

def roles_table() -> dict[str, str]:
    """id -> built-in role name, from infra/ROLES.md."""
    rows = {}
    for line in (INFRA / "ROLES.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and GUID.fullmatch(cells[1]):
            rows[cells[1].lower()] = cells[0]
    return rows


def identifier(role_name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", role_name.lower())


def test_every_role_id_is_a_known_builtin_with_the_expected_name():
    table = roles_table()
    # ids that infra/ROLES.md took from the built-in roles list (the docs page it cites)
    assert table["7f951dda-4ed3-4680-a7ca-43fe172d538d"] == "AcrPull"
    used = set()
    for path in TEMPLATES:
        text = bicep.read(path)
        for name, value in bicep.variables(text).items():
            role_id = bicep.literal(value)
            if role_id and GUID.fullmatch(role_id):
                assert role_id in table, f"{path.name}: {name} = {role_id} is not in infra/ROLES.md"
                assert identifier(table[role_id]) == identifier(name), \
                    f"{path.name}: variable {name} holds the id of {table[role_id]!r}"
                used.add(role_id)
        for m in re.finditer(r"roleDefinitions',\s*([^)]+)\)", text):
            argument = m.group(1).strip()
            assert not GUID.search(argument), f"{path.name}: use a named variable for role ids"
        stray = set(g.lower() for g in GUID.findall(text)) - set(table)
        assert not stray, f"{path.name}: GUIDs that are not known roles: {stray}"
    assert used == set(table), f"infra/ROLES.md lists roles no template uses: {set(table) - used}"


def test_roles_are_scoped_narrowly():
    access = bicep.read(INFRA / "app" / "storage-access.bicep")
    for block in bicep.blocks(access):
        if block.target == "Microsoft.Authorization/roleAssignments":
            assert "Owner" not in block.body or block.symbol == "appRoles"
    registry = bicep.read(INFRA / "app" / "registry-access.bicep")
    assert "if (buildsEnabled)" in registry  # the Tasks role only when builds are used
    for path in TEMPLATES:
        text = bicep.read(path)
        for owner in ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "b24988ac-6180-42a0-ab88-20f7382dd24c"):
            assert owner not in text, f"{path.name}: Owner/Contributor is never needed"



def test_the_app_may_push_the_trust_material_and_nothing_broader():
    """``airlock trust publish`` pushes to airlock/trust on the data plane, which the importer role cannot do
    (the emulator models that: tests/integration/test_trust_publish.py). AcrPush, unconditionally, on the
    registry, for the app; Owner/Contributor stay out (test_roles_are_scoped_narrowly)."""
    assert roles_table()["8311e382-0749-4cb8-b61a-304f252e45ec"] == "AcrPush"
    text = bicep.read(INFRA / "app" / "registry-access.bicep")
    [publisher] = [b for b in bicep.blocks(text) if b.target == "Microsoft.Authorization/roleAssignments"
                   and "acrPush" in b.body]
    header = text[:text.index(publisher.body)].rsplit("resource", 1)[1]
    assert "if (" not in header  # every deployment can publish, builds or not
    fields = bicep.entries(bicep.entries(publisher.body)["properties"])
    assert "acrPush" in fields["roleDefinitionId"] and fields["principalId"] == "appPrincipalId"
    assert fields["principalType"] == "'ServicePrincipal'"
    assert bicep.entries(publisher.body)["scope"] == "registry"
    assert "guid(registry.id, appPrincipalId, acrPush)" in bicep.entries(publisher.body)["name"]


def role_assignments() -> list[tuple[str, bicep.Block]]:
    return [(path.name, block) for path in TEMPLATES for block in bicep.blocks(bicep.read(path))
            if block.target == "Microsoft.Authorization/roleAssignments" and not block.existing]


def test_every_role_assignment_names_its_principal_type():
    """ARM creates an assignment for a principal Entra ID has not replicated yet only when principalType
    is given (the identities here are created in the same deployment); without it: PrincipalNotFound."""
    assignments = role_assignments()
    assert len(assignments) >= 8
    for path, block in assignments:
        types = bicep.find_key(block.body, "principalType")
        assert types, f"{path}: {block.symbol} has no principalType"


def operators(principal_id: str, principal_type: str, pipeline_id: str) -> list[dict]:
    values = {"principalId": principal_id, "principalType": principal_type, "pipelinePrincipalId": pipeline_id}
    return bicep.evaluate(bicep.var(MAIN, "operators"), bicep.Scope(MAIN, values))


def test_operators_are_each_principal_once_with_its_type():
    """azd signed in as the pipeline's own identity gives principalId == pipelinePrincipalId: one role
    assignment declared twice (same guid() name) is a template ARM rejects. Object ids compare without case."""
    user, pipeline = "0a1b2c3d-0000-4000-8000-00000000000a", "5e6f7a8b-0000-4000-8000-00000000000b"
    assert operators(user, "User", pipeline) == [{"id": user, "type": "User"},
                                                 {"id": pipeline, "type": "ServicePrincipal"}]
    assert operators(pipeline, "ServicePrincipal", pipeline) == [{"id": pipeline, "type": "ServicePrincipal"}]
    assert operators(pipeline.upper(), "ServicePrincipal", pipeline) == [{"id": pipeline, "type": "ServicePrincipal"}]
    assert operators("", "User", pipeline) == [{"id": pipeline, "type": "ServicePrincipal"}]
    assert operators(user, "User", "") == [{"id": user, "type": "User"}]
    assert operators("", "User", "") == []
    # azd's own AZURE_PRINCIPAL_TYPE (User, or ServicePrincipal when azd signs in as one)
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["principalType"]["value"] == "${AZURE_PRINCIPAL_TYPE=User}"
    assert "@allowed" in bicep.decorators((INFRA / "main.bicep").read_text(), "principalType")
    # every module that grants operators roles gets exactly that list, and each of its loops uses both fields
    granting = [b for b in bicep.blocks(MAIN)
                if b.kind == "module" and "operators" in bicep.entries(bicep.find_key(b.body, "params")[0])]
    assert {b.symbol for b in granting} == {"storageAccess", "registryAccess"}
    for block in granting:
        assert bicep.entries(bicep.find_key(block.body, "params")[0])["operators"] == "operators"
        module = bicep.read(INFRA / block.target)
        loops = [b for b in bicep.blocks(module) if b.body.lstrip().startswith("[for operator in operators:")]
        assert loops, block.target
        for loop in loops:
            body = bicep.entries(loop.body)
            assert "operator.id" in body["name"], (block.target, loop.symbol)
            properties = bicep.entries(body["properties"])
            assert properties["principalId"] == "operator.id" and properties["principalType"] == "operator.type"
        assert "operatorPrincipalIds" not in module


# -- Key Vault ---------------------------------------------------------------------------------------

def test_key_vault_can_be_purged_and_renamed():
    """Purge protection keeps a deleted vault's name taken for the whole retention period and `azd down
    --purge` cannot purge it, so `azd up` after `azd down` collides with it. The vault holds only the Docker
    Hub token: no purge protection (the property does not accept false: it is left out), and a name that
    can be changed (KEY_VAULT_NAME) for an environment whose old vault is still soft-deleted."""
    vault = next(b for b in bicep.blocks(bicep.read(INFRA / "app" / "keyvault.bicep"))
                 if b.target == "Microsoft.KeyVault/vaults")
    assert not bicep.find_key(vault.body, "enablePurgeProtection")
    assert bicep.find_key(vault.body, "enableSoftDelete") == ["true"]
    module = bicep.entries(bicep.find_key(next(b for b in bicep.blocks(MAIN) if b.symbol == "keyVault").body,
                                          "params")[0])
    token = "abcdefghijklmnopqrstuvwxyz"  # main.bicep's uniqueString() token: ARM computes it
    assert bicep.evaluate(module["name"], bicep.Scope(MAIN, {"token": token, "keyVaultName": ""})) == \
        "kv-abcdefghijklmnopqr"
    assert bicep.evaluate(module["name"], bicep.Scope(MAIN, {"token": token, "keyVaultName": "kv-other"})) == \
        "kv-other"
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["keyVaultName"]["value"] == "${KEY_VAULT_NAME=}"
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    assert "azd down --purge" in deployment and "KEY_VAULT_NAME" in deployment

# -- Event Grid --------------------------------------------------------------------------------------

def subscription_blocks() -> list[tuple[str, str]]:
    """(endpointUrl, block body) of every event subscription subscriptions.bicep creates."""
    found = []
    for block in bicep.blocks(SUBSCRIPTIONS):
        urls = bicep.find_key(block.body, "endpointUrl")
        if urls:
            found.append((urls[0], block.body))
    return found


def test_every_event_driven_function_has_a_subscription(index):
    from shared.core.events import KNOWN, PREFIX

    subscriptions = subscription_blocks()
    outputs = bicep.outputs(MAIN)
    postdeploy = (ROOT / "scripts" / "postdeploy.sh").read_text()
    settings = app_settings()
    checked = 0
    for name, function in index.items():
        binding = trigger(function)
        if binding["type"] == "blobTrigger":
            assert binding.get("source") == "EventGrid", f"{name}: Flex supports only EventGrid blob triggers"
            url = ("'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions."
                   f"{name}&code=${{host.listKeys().systemKeys.blobs_extension}}'")
            [body] = [b for u, b in subscriptions if u == url] or [None]
            assert body, f"no subscription delivers to {name}'s blob extension webhook"
            assert bicep.string_list(bicep.find_key(body, "includedEventTypes")[0]) == ["Microsoft.Storage.BlobCreated"]
            # the container in the filter is the one the binding names, through the azd outputs
            [ref] = SETTING_REF.findall(binding["path"].split("/")[0])
            output = next(o for o, v in outputs.items() if v == settings[ref])
            parameter = re.search(rf"(\w+)=\"\${{{output}}}\"", postdeploy).group(1)
            assert bicep.find_key(body, "subjectBeginsWith") == [
                f"'/blobServices/default/containers/${{{parameter}}}/blobs/'"]
        elif binding["type"] == "eventGridTrigger":
            url = ("'https://${site.properties.defaultHostName}/runtime/webhooks/eventgrid?functionName="
                   f"{name}&code=${{host.listKeys().systemKeys.eventgrid_extension}}'")
            [body] = [b for u, b in subscriptions if u == url] or [None]
            assert body, f"no subscription delivers to {name} through the eventgrid extension webhook"
            types = bicep.string_list(bicep.find_key(body, "includedEventTypes")[0])
            assert sorted(types) == sorted(PREFIX + k for k in KNOWN)
        elif binding["type"] in ("httpTrigger", "timerTrigger", "queueTrigger"):
            continue
        else:
            pytest.fail(f"{name}: {binding['type']} has no rule here; decide what infra it needs")
        checked += 1
        assert "retryPolicy" in body and "deadLetter" in body
    assert checked >= 2
    module = bicep.read(INFRA / "app" / "registry-subscription.bicep")
    assert "deadLetterWithResourceIdentity: deadLetter" in module and "retryPolicy: retryPolicy" in module
    assert "@secure" in bicep.decorators((INFRA / "app" / "registry-subscription.bicep").read_text(), "endpointUrl")
    dead = bicep.var(SUBSCRIPTIONS, "deadLetter")
    assert "type: 'UserAssigned'" in dead and "blobContainerName: deadLetterContainerName" in dead


REGISTRY_TOPIC_TYPE = "Microsoft.ContainerRegistry.Registries"


def registry_topic_module(values: dict) -> tuple[dict, str]:
    """main.bicep's registry topic module evaluated for ``values``: (its params, its resource group)."""
    [module] = [b for b in bicep.blocks(MAIN) if b.kind == "module" and b.target == "app/registry-topic.bicep"]
    identities = {"outputs": {"eventGridIdentityId": "/subscriptions/s/resourceGroups/rg-prod/providers/"
                                                     "Microsoft.ManagedIdentity/userAssignedIdentities/id-eg"}}
    scope = bicep.Scope(MAIN, {"token": "tok123", "location": "eastus", "environmentName": "prod",
                               "resourceGroupName": "rg-prod", "identities": identities, **values})
    params = {k: bicep.evaluate(v, scope) for k, v in bicep.entries(bicep.find_key(module.body, "params")[0]).items()}
    where = re.fullmatch(r"resourceGroup\((\w+), (\w+)\)", bicep.find_key(module.body, "scope")[0])
    assert where, module.body
    assert bicep.evaluate(where.group(1), scope) == (scope.get("registrySubscriptionId"))
    return params, bicep.evaluate(where.group(2), scope)


def test_an_existing_registrys_system_topic_is_reused_not_duplicated():
    """Event Grid allows one system topic per source, and any event subscription made on the registry in the
    portal creates one: a registry that has one gets it reused (ACR_SYSTEM_TOPIC_NAME, found by
    scripts/preprovision.sh), in its own resource group and location, with its tags and identities kept
    and Event Grid's identity (dead-lettering) added. Without one, one is created as before."""
    topics = [(path.name, block) for path in TEMPLATES for block in bicep.blocks(bicep.read(path))
              if block.target == "Microsoft.EventGrid/systemTopics" and not block.existing
              and REGISTRY_TOPIC_TYPE in block.body]
    assert [name for name, _ in topics] == ["registry-topic.bicep"]
    registry = "/subscriptions/acr-sub/resourceGroups/rg-acr/providers/Microsoft.ContainerRegistry/registries/acr1"
    access = {"outputs": {"id": registry, "location": "westeurope", "loginServer": "acr1.azurecr.io"}}
    found = {"location": "westeurope", "tags": {"owner": "team-x"},
             "identity": {"type": "SystemAssigned", "principalId": "p0"},
             "properties": {"source": registry.lower(), "topicType": REGISTRY_TOPIC_TYPE}}
    # the registry already has a topic, in another resource group
    params, group = registry_topic_module({
        "existingRegistryId": registry, "existingRegistryTopicName": "acr1-4f2a9c",
        "existingRegistryTopicResourceGroup": "rg-events", "registryAccess": access,
        "existingRegistryTopic": found})
    assert group == "rg-events"
    assert params["name"] == "acr1-4f2a9c" and params["location"] == "westeurope"
    assert params["tags"] == {"owner": "team-x"} and params["registryId"] == registry.lower()
    assert params["existingIdentity"] == found["identity"]
    # in the registry's own resource group when none is named
    _, group = registry_topic_module({
        "existingRegistryId": registry, "existingRegistryTopicName": "acr1-4f2a9c",
        "existingRegistryTopicResourceGroup": "", "registryAccess": access, "existingRegistryTopic": found})
    assert group == "rg-acr"
    # no topic yet: a new one beside the registry
    params, group = registry_topic_module({
        "existingRegistryId": registry, "existingRegistryTopicName": "",
        "existingRegistryTopicResourceGroup": "", "registryAccess": access})
    assert (params["name"], group, params["location"]) == ("evgt-acr-tok123", "rg-acr", "westeurope")
    assert params["existingIdentity"] == {} and params["registryId"] == registry
    # a new registry has no topic to reuse, whatever the environment still says
    params, group = registry_topic_module({
        "newRegistryId": "/subscriptions/azd-sub/resourceGroups/rg-prod/providers/Microsoft.ContainerRegistry/"
                         "registries/crtok123",
        "existingRegistryId": "", "existingRegistryTopicName": "acr1-4f2a9c",
        "existingRegistryTopicResourceGroup": "rg-events", "registryAccess": access})
    assert (params["name"], group) == ("evgt-acr-tok123", "rg-prod")
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["existingRegistryTopicName"]["value"] == "${ACR_SYSTEM_TOPIC_NAME=}"
    assert given["existingRegistryTopicResourceGroup"]["value"] == "${ACR_SYSTEM_TOPIC_RESOURCE_GROUP=}"
    # the topic's identities: what it had, plus Event Grid's user-assigned identity
    text = bicep.read(INFRA / "app" / "registry-topic.bicep")
    [(_, topic)] = topics
    ours = "/subscriptions/s/resourceGroups/rg-prod/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-eg"

    def identity(existing: dict) -> dict:
        scope = bicep.Scope(text, {"existingIdentity": existing, "eventGridIdentityId": ours})
        return bicep.evaluate(bicep.entries(topic.body)["identity"], scope)
    assert identity({}) == {"type": "UserAssigned", "userAssignedIdentities": {ours: {}}}
    assert identity({"type": "SystemAssigned", "principalId": "p0", "tenantId": "t"}) == {
        "type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {ours: {}}}
    other = "/subscriptions/s/resourceGroups/rg-x/providers/Microsoft.ManagedIdentity/userAssignedIdentities/theirs"
    theirs = {"type": "UserAssigned", "userAssignedIdentities": {other: {"principalId": "p", "clientId": "c"}}}
    assert identity(theirs) == {"type": "UserAssigned", "userAssignedIdentities": {other: {}, ours: {}}}
    # the registry event subscription goes to that topic, in its resource group
    outputs = bicep.outputs(MAIN)
    assert outputs["REGISTRY_SYSTEM_TOPIC_NAME"] == "registryTopic.outputs.name"
    assert outputs["REGISTRY_SYSTEM_TOPIC_RESOURCE_GROUP"] == "registryTopicResourceGroupName"
    event = next(b for b in bicep.blocks(SUBSCRIPTIONS) if b.symbol == "registryEvent")
    assert bicep.find_key(event.body, "scope") == [
        "resourceGroup(registrySubscriptionId, registrySystemTopicResourceGroupName)"]

def test_postdeploy_passes_every_subscriptions_parameter():
    postdeploy = (ROOT / "scripts" / "postdeploy.sh").read_text()
    outputs = bicep.outputs(MAIN)
    passed = dict(re.findall(r"(\w+)=\"\$\{(\w+)\}\"", postdeploy))
    assert set(passed) == set(bicep.params(SUBSCRIPTIONS))
    for parameter, variable in passed.items():
        assert variable in outputs or variable.startswith("AZURE_"), f"{parameter}: ${variable} is no azd output"


# -- API versions, secrets, azd files -------------------------------------------------------------------

def published_versions() -> set[tuple[str, str]]:
    rows = set()
    for line in (INFRA / "API_VERSIONS.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", cells[1]):
            rows.add((cells[0], cells[1]))
    return rows


def test_every_api_version_is_published():
    table = published_versions()
    used = set()
    for path in TEMPLATES:
        for block in bicep.blocks(bicep.read(path)):
            if block.kind == "resource":
                used.add((block.target, block.version))
                assert (block.target, block.version) in table, \
                    f"{path.name}: {block.target}@{block.version} is not in infra/API_VERSIONS.md"
    assert used == table, f"infra/API_VERSIONS.md lists versions no template uses: {table - used}"
    assert all("preview" not in version for _, version in used)


SECRET_PATTERNS = [
    re.compile(r"AccountKey=", re.I), re.compile(r"SharedAccessSignature|[?&]sig=", re.I),
    re.compile(r"InstrumentationKey=[0-9a-f]", re.I), re.compile(r"-----BEGIN"),
    re.compile(r"code=(?!\$\{)[A-Za-z0-9_\-=]+"), re.compile(r"['\"][A-Za-z0-9+/]{40,}={0,2}['\"]"),
    re.compile(r"(password|token|secret)\s*[:=]\s*'[^'$]+'", re.I),
]


def deployment_files() -> list[Path]:
    files = [*TEMPLATES, INFRA / "main.parameters.json", ROOT / "azure.yaml", ROOT / "scripts" / "postdeploy.sh",
             ROOT / "scripts" / "smoke.sh", ROOT / "pipelines" / "azure-pipelines.yml",
             ROOT / ".github" / "workflows" / "images.yml"]
    return [f for f in files if f.exists()]


def test_no_secret_or_key_literal_anywhere():
    for path in deployment_files():
        text = path.read_text()
        for pattern in SECRET_PATTERNS:
            assert not pattern.search(text), f"{path.relative_to(ROOT)}: {pattern.pattern} matches"
    for path in TEMPLATES:
        text = bicep.read(path)
        for name, value in bicep.outputs(text).items():
            assert "listKeys" not in value and "endpointUrl" not in value and "Token" not in value, (path, name)
        for name, (kind, default) in bicep.params(text).items():
            if re.search(r"(token|secret|password|accountkey)$", name, re.I):
                assert "@secure" in bicep.decorators(path.read_text(), name), f"{path.name}: {name} must be @secure()"


def test_the_secret_detector_detects():
    for leaked in ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc", "x?sv=2024&sig=abc",
                   "endpointUrl: 'https://f/runtime/webhooks/blobs?functionName=x&code=abcDEF123=='",
                   "dockerHubToken: 'dckr_pat_123'"):
        assert any(p.search(leaked) for p in SECRET_PATTERNS), leaked


def test_azure_yaml_and_parameters():
    project = yaml.safe_load((ROOT / "azure.yaml").read_text())
    service = project["services"]["airlock"]
    assert service == {"project": ".", "language": "python", "host": "function"}
    assert project["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert set(project["hooks"]) == {"preprovision", "postdeploy"}
    for hook in project["hooks"].values():
        assert (ROOT / hook["run"]).exists() and (ROOT / hook["run"]).stat().st_mode & 0o111
        assert hook["continueOnError"] is False
    # the tag azd finds the app by
    assert "'azd-service-name': 'airlock'" in MAIN
    declared = bicep.params(MAIN)
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(declared)
    assert {name for name, (_, default) in declared.items() if default is None} <= set(given)
    ignored = (ROOT / ".funcignore").read_text().split()
    assert {"infra", "pipelines", "azure.yaml", "tests"} <= set(ignored)


# -- private source registries (issue 20, #16) ------------------------------------------------------

SECRETS_URI = "https://kv-test.vault.azure.net/secrets/"


def registry_app_settings(credentials: dict, acrs: str = "") -> dict[str, str]:
    """The settings main.bicep gives the app for sourceRegistryCredentials (the JSON object, base64 as
    azd passes it) and sourceAcrResourceIds: SOURCE_REGISTRY_CREDENTIALS, SOURCE_ACR_RESOURCE_IDS and
    registrySettings, evaluated."""
    import base64

    values = {"sourceRegistryCredentials": base64.b64encode(json.dumps(credentials).encode()).decode()
              if credentials else "", "sourceAcrResourceIds": acrs,
              "keyVault": {"outputs": {"secretsUri": SECRETS_URI}}}
    scope = bicep.Scope(MAIN, values)
    settings = app_settings()
    fixed = {name: bicep.evaluate(settings[name], scope)
             for name in ("SOURCE_REGISTRY_CREDENTIALS", "SOURCE_ACR_RESOURCE_IDS")}
    return {**fixed, **bicep.evaluate(bicep.var(MAIN, "registrySettings"), scope)}


def stored_registry_secrets(credentials: dict) -> dict[str, str]:
    """What app/keyvault.bicep stores for registryCredentials: secret name -> value."""
    vault = bicep.read(INFRA / "app" / "keyvault.bicep")
    [loop] = [b for b in bicep.blocks(vault) if b.symbol == "registryPasswords"]
    assert loop.body.lstrip().startswith("[for c in items(registryCredentials):")
    body = bicep.entries(bicep.balanced(loop.body, loop.body.index("{")))
    stored = {}
    for item in bicep.FUNCTIONS["items"](credentials):
        scope = bicep.Scope(vault, {"c": item})
        stored[bicep.evaluate(body["name"], scope)] = bicep.evaluate(bicep.entries(body["properties"])["value"], scope)
    return stored


def test_source_registry_passwords_reach_the_app_only_through_key_vault():
    """The template's settings, read by shared/config.py once the platform resolved each Key Vault reference
    to the secret app/keyvault.bicep stored: every registry gets its own user and password."""
    from shared.config import Settings

    credentials = {"GHCR": {"registry": "ghcr.io", "username": "bot", "password": "pw-ghcr-1"},
                   "EXAMPLE2": {"registry": "registry.example.com:5000", "username": "puller", "password": "pw-ex-2"}}
    settings = registry_app_settings(credentials)
    assert settings["SOURCE_REGISTRY_CREDENTIALS"] == "ghcr.io=GHCR,registry.example.com:5000=EXAMPLE2"
    assert settings["REGISTRY_GHCR_USERNAME"] == "bot"
    references = {k: v for k, v in settings.items() if k.endswith("_PASSWORD")}
    assert set(references) == {"REGISTRY_GHCR_PASSWORD", "REGISTRY_EXAMPLE2_PASSWORD"}
    secrets = stored_registry_secrets(credentials)
    resolved = {}
    for name, reference in references.items():
        match = re.fullmatch(r"@Microsoft\.KeyVault\(SecretUri=(\S+)\)", reference)
        assert match and match.group(1).startswith(SECRETS_URI), reference  # never the password itself
        resolved[name] = secrets[match.group(1)[len(SECRETS_URI):]]  # the platform resolves the reference
    app = Settings.from_env({"AZURE_SUBSCRIPTION_ID": "s", "ACR_RESOURCE_GROUP": "g", "ACR_NAME": "a",
                             "AzureWebJobsStorage": "UseDevelopmentStorage=true", **settings, **resolved})
    assert app.credentials_for("ghcr.io") == ("bot", "pw-ghcr-1")
    assert app.credentials_for("registry.example.com:5000") == ("puller", "pw-ex-2")
    # none by default: no settings, no secrets
    assert registry_app_settings({}) == {"SOURCE_REGISTRY_CREDENTIALS": "", "SOURCE_ACR_RESOURCE_IDS": ""}
    # the password appears nowhere else in main.bicep, and the parameters are secure
    assert "password" not in bicep.var(MAIN, "registrySettings").replace("-password", "")
    assert "@secure" in bicep.decorators((INFRA / "main.bicep").read_text(), "sourceRegistryCredentials")
    assert "@secure" in bicep.decorators((INFRA / "app" / "keyvault.bicep").read_text(), "registryCredentials")
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["sourceRegistryCredentials"]["value"] == "${SOURCE_REGISTRY_CREDENTIALS_B64=}"
    app_module = next(b for b in bicep.blocks(MAIN) if b.symbol == "app")
    assert bicep.entries(bicep.find_key(app_module.body, "params")[0])["appSettings"] == \
        "union(appSettings, secretSettings, registrySettings)"


def test_source_acrs_get_the_import_role_and_the_setting():
    ids = ["/subscriptions/1111/resourceGroups/src-rg/providers/Microsoft.ContainerRegistry/registries/shared",
           "/subscriptions/2222/resourceGroups/other/providers/Microsoft.ContainerRegistry/registries/base"]
    acrs = f"shared.azurecr.io={ids[0]}, base.azurecr.io={ids[1]}"
    assert registry_app_settings({}, acrs)["SOURCE_ACR_RESOURCE_IDS"] == acrs
    assert bicep.evaluate(bicep.var(MAIN, "sourceAcrIds"), bicep.Scope(MAIN, {"sourceAcrResourceIds": acrs})) == ids
    assert bicep.evaluate(bicep.var(MAIN, "sourceAcrIds"), bicep.Scope(MAIN, {"sourceAcrResourceIds": ""})) == []
    [module] = [b for b in bicep.blocks(MAIN) if b.symbol == "sourceAcrAccess"]
    assert module.target == "app/registry-source-access.bicep"
    assert module.body.lstrip().startswith("[for id in sourceAcrIds:")
    assert "scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])" in module.body  # its subscription and group
    access = bicep.read(INFRA / "app" / "registry-source-access.bicep")
    [grant] = [b for b in bicep.blocks(access) if b.target == "Microsoft.Authorization/roleAssignments"]
    properties = bicep.entries(bicep.find_key(grant.body, "properties")[0])
    assert "containerRegistryDataImporterAndDataReader" in properties["roleDefinitionId"]
    assert properties["principalId"] == "appPrincipalId" and properties["principalType"] == "'ServicePrincipal'"
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["sourceAcrResourceIds"]["value"] == "${SOURCE_ACR_RESOURCE_IDS=}"
