// acr-airlock on Azure Functions Flex Consumption, provisioned by `azd up` (see docs/deployment.md).
// Written for this app (not copied); the shape follows Azure's azd quickstarts for Flex Consumption
// with an Event Grid-sourced blob trigger. Every API version used here is listed with its source
// in infra/API_VERSIONS.md; every role id with its source in infra/ROLES.md. tests/deploy holds
// these templates to what the code needs.
//
// The Event Grid subscriptions are NOT created here: their webhook URLs carry the Functions host's
// system keys (blobs_extension, eventgrid_extension), which exist only once the code is deployed and
// the host has started. infra/subscriptions.bicep creates them, run by the postdeploy hook
// (scripts/postdeploy.sh) that `azd up` calls after deploying the code.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names and tags every resource.')
param environmentName string

@minLength(1)
@description('Region of every new resource; must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string

@description('Resource id of an existing ACR to keep stocked. Empty: create a new Premium registry.')
param existingRegistryId string = ''

@description('Name of the Event Grid system topic the existing ACR already has (Event Grid allows one per source; an event subscription made in the portal creates one): reused, with Event Grid\'s identity added. Empty: the registry has none, one is created. scripts/preprovision.sh finds it.')
param existingRegistryTopicName string = ''

@description('Resource group of that topic; empty: the registry\'s.')
param existingRegistryTopicResourceGroup string = ''

@description('Private networking: VNet integration for the app, private endpoints and private DNS zones for storage, the ACR and Key Vault, public access off.')
param vnetEnabled bool = false

@description('Grant the app the ACR Tasks role it needs for builds on agent pools (docs/builds.md).')
param buildsEnabled bool = false

@description('Docker Hub user for pulls and imports from docker.io (optional).')
param dockerHubUsername string = ''

@secure()
@description('Docker Hub access token, stored in Key Vault and read through a Key Vault reference (optional).')
param dockerHubToken string = ''

@secure()
@description('Private source registries and their credentials (optional): base64 of a JSON object {"<NAME>": {"registry": "<host[:port]>", "username": "...", "password": "..."}}, NAME as SOURCE_REGISTRY_CREDENTIALS names it (A-Z and 0-9, a letter first). Each password is stored in Key Vault and read through a Key Vault reference (REGISTRY_<NAME>_PASSWORD); docs/settings.md, docs/deployment.md.')
param sourceRegistryCredentials string = ''

@description('Source registries that are other Azure Container Registries (optional): comma-separated LOGIN_SERVER=RESOURCE_ID pairs (SOURCE_ACR_RESOURCE_IDS). The app reads them with its identity and imports from them by resource id, with no password; it gets Container Registry Data Importer and Data Reader on each.')
param sourceAcrResourceIds string = ''

@description('Object id of the user running azd (set by azd): may upload manifests and read records (smoke test).')
param principalId string = ''

@allowed(['User', 'ServicePrincipal'])
@description('What principalId is (azd sets AZURE_PRINCIPAL_TYPE: ServicePrincipal when it signs in as one, as in a pipeline).')
param principalType string = 'User'

@description('Object id of the pipeline service principal (the federated identity of the pipelines): uploads manifests, reads records, plans.')
param pipelinePrincipalId string = ''

@description('Container watched for images.txt uploads and the build rule file.')
param manifestsContainerName string = 'manifests'

@description('Container that receives one outcome record per run.')
param outcomesContainerName string = 'outcomes'

@description('Container for Event Grid events that could not be delivered.')
param deadLetterContainerName string = 'deadletter'

@description('Storage queue for queued runs (RUNS_QUEUE); the host moves failed messages to <name>-poison.')
param runsQueueName string = 'airlock-runs'

@description('NCRONTAB schedule of the re-sync timer.')
param resyncSchedule string = '0 0 */6 * * *'

@description('NCRONTAB schedule of the idle-pool timer.')
param poolScaleSchedule string = '0 */5 * * * *'

@description('NCRONTAB schedule of the reaper timer (abandons runs with no progress).')
param reaperSchedule string = '0 */5 * * * *'

@description('Key Vault name; empty: kv-<token>. Set another while a deleted vault of that name is still soft-deleted (docs/deployment.md).')
param keyVaultName string = ''

@description('Python version of the Function App: one Flex Consumption offers (README: Python version).')
param pythonVersion string = '3.11'

@description('Largest number of instances Flex Consumption may scale to.')
param maximumInstanceCount int = 40

var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var newRegistry = empty(existingRegistryId)
// /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}
var newRegistryId = '/subscriptions/${subscription().subscriptionId}/resourceGroups/${resourceGroupName}/providers/Microsoft.ContainerRegistry/registries/cr${token}'
var registryId = newRegistry ? newRegistryId : existingRegistryId
var registryParts = split(registryId, '/')
var registrySubscriptionId = registryParts[2]
var registryResourceGroupName = registryParts[4]
var registryName = registryParts[8]
var resourceGroupName = 'rg-${environmentName}'
// The registry's Event Grid system topic: the one an existing registry already has, or a new one beside it
var reuseRegistryTopic = !newRegistry && !empty(existingRegistryTopicName)
var registryTopicResourceGroupName = reuseRegistryTopic && !empty(existingRegistryTopicResourceGroup) ? existingRegistryTopicResourceGroup : registryResourceGroupName
var functionAppName = 'func-${token}'
var deploymentContainerName = 'app-package-${take(token, 12)}'
// The operators (the azd user, the pipeline) get their roles once each: when azd runs as the pipeline's own
// identity both ids name one principal (in any letter case), and a role assignment declared twice (one
// guid() name) is a template ARM rejects. principalType is given so that ARM need not look the principal up.
var deployerIsPipeline = !empty(principalId) && toLower(principalId) == toLower(pipelinePrincipalId)
var deployerOperator = empty(principalId) || deployerIsPipeline ? [] : [{ id: principalId, type: principalType }]
var pipelineOperator = empty(pipelinePrincipalId) ? [] : [{ id: pipelinePrincipalId, type: 'ServicePrincipal' }]
var operators = concat(deployerOperator, pipelineOperator)
// NAME -> { registry, username, password } of each private source registry; passwords go to Key Vault only
var registryCredentials = empty(sourceRegistryCredentials) ? {} : json(base64ToString(sourceRegistryCredentials))
// the resource ids in sourceAcrResourceIds (LOGIN_SERVER=RESOURCE_ID pairs)
var sourceAcrIds = map(filter(split(sourceAcrResourceIds, ','), pair => contains(pair, '=')), pair => trim(split(pair, '=')[1]))

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: tags
}

module identities 'app/identities.bicep' = {
  name: 'identities'
  scope: rg
  params: {
    location: location
    tags: tags
    appIdentityName: 'id-func-${token}'
    eventGridIdentityName: 'id-eventgrid-${token}'
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: 'log-${token}'
    applicationInsightsName: 'appi-${token}'
    appPrincipalId: identities.outputs.appPrincipalId
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'st${token}'
    vnetEnabled: vnetEnabled
    containerNames: [deploymentContainerName, manifestsContainerName, outcomesContainerName, deadLetterContainerName]
    queueNames: [runsQueueName, '${runsQueueName}-poison']
    runsWorkPrefix: '${outcomesContainerName}/runs-work/'
    verdictsPrefix: '${outcomesContainerName}/verdicts/'
  }
}

module storageAccess 'app/storage-access.bicep' = {
  name: 'storage-access'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    appPrincipalId: identities.outputs.appPrincipalId
    eventGridPrincipalId: identities.outputs.eventGridPrincipalId
    operators: operators
    manifestsContainerName: manifestsContainerName
    outcomesContainerName: outcomesContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    name: empty(keyVaultName) ? 'kv-${take(token, 18)}' : keyVaultName
    vnetEnabled: vnetEnabled
    dockerHubToken: dockerHubToken
    registryCredentials: registryCredentials
    appPrincipalId: identities.outputs.appPrincipalId
  }
}

module registry 'app/registry.bicep' = if (newRegistry) {
  name: 'registry'
  scope: rg
  params: {
    location: location
    tags: tags
    name: registryName
    vnetEnabled: vnetEnabled
  }
}

module registryAccess 'app/registry-access.bicep' = {
  name: 'registry-access'
  scope: resourceGroup(registrySubscriptionId, registryResourceGroupName)
  params: {
    registryName: registryName
    tags: tags
    appPrincipalId: identities.outputs.appPrincipalId
    operators: operators
    buildsEnabled: buildsEnabled
  }
  dependsOn: [registry]
}

// the app's role on each source ACR it imports from by resource id (SOURCE_ACR_RESOURCE_IDS)
module sourceAcrAccess 'app/registry-source-access.bicep' = [for id in sourceAcrIds: {
  name: 'source-acr-${uniqueString(id)}'
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
  params: {
    registryName: last(split(id, '/'))
    appPrincipalId: identities.outputs.appPrincipalId
  }
}]

resource existingRegistryTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = if (reuseRegistryTopic) {
  name: existingRegistryTopicName
  scope: resourceGroup(registrySubscriptionId, registryTopicResourceGroupName)
}

module registryTopic 'app/registry-topic.bicep' = {
  name: 'registry-topic'
  scope: resourceGroup(registrySubscriptionId, registryTopicResourceGroupName)
  params: {
    name: reuseRegistryTopic ? existingRegistryTopicName : 'evgt-acr-${token}'
    location: reuseRegistryTopic ? existingRegistryTopic.location : registryAccess.outputs.location
    tags: reuseRegistryTopic ? (existingRegistryTopic.?tags ?? {}) : tags
    registryId: reuseRegistryTopic ? existingRegistryTopic.properties.source : registryAccess.outputs.id
    eventGridIdentityId: identities.outputs.eventGridIdentityId
    existingIdentity: reuseRegistryTopic ? (existingRegistryTopic.?identity ?? {}) : {}
  }
}

module storageTopic 'app/storage-topic.bicep' = {
  name: 'storage-topic'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'evgt-st-${token}'
    storageAccountName: storage.outputs.name
    eventGridIdentityId: identities.outputs.eventGridIdentityId
  }
}

module network 'app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: tags
    vnetName: 'vnet-${token}'
    storageAccountId: storage.outputs.id
    keyVaultId: keyVault.outputs.id
    registryId: registryAccess.outputs.id
  }
}

// Every setting the Functions host or the code requires (tests/deploy/test_templates.py derives the
// list from function_app.py's bindings and shared/config.py and holds this block to it).
var appSettings = {
  // the host's own storage, identity-based (shared key access is disabled on the account)
  AzureWebJobsStorage__blobServiceUri: storage.outputs.blobEndpoint
  AzureWebJobsStorage__queueServiceUri: storage.outputs.queueEndpoint
  AzureWebJobsStorage__tableServiceUri: storage.outputs.tableEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identities.outputs.appClientId
  // DefaultAzureCredential picks the user-assigned identity by this client id
  AZURE_CLIENT_ID: identities.outputs.appClientId
  // Application Insights with local auth disabled: Entra ID ingestion with the app's identity
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identities.outputs.appClientId};Authorization=AAD'
  // the worker passes the host's trace context to the app: run spans are children of the invocation
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  // one worker thread per run message in flight (host.json queues: batchSize 8 + newBatchThreshold 16);
  // the Python worker's default is min(32, vCPUs + 4) threads (docs/architecture.md, "Scale-out")
  PYTHON_THREADPOOL_THREAD_COUNT: '24'
  // the registry
  AZURE_SUBSCRIPTION_ID: registrySubscriptionId
  ACR_RESOURCE_GROUP: registryResourceGroupName
  ACR_NAME: registryName
  ACR_LOGIN_SERVER: registryAccess.outputs.loginServer
  // containers, queues and schedules named in bindings (%NAME%): the host refuses to start without them
  MANIFESTS_CONTAINER: manifestsContainerName
  OUTCOMES_CONTAINER: outcomesContainerName
  RESYNC_SCHEDULE: resyncSchedule
  POOL_SCALE_SCHEDULE: poolScaleSchedule
  RUNS_QUEUE: runsQueueName
  REAPER_SCHEDULE: reaperSchedule
  DOCKERHUB_USERNAME: dockerHubUsername
  // each private source registry by name; its user and password are the registrySettings below
  SOURCE_REGISTRY_CREDENTIALS: join(map(items(registryCredentials), c => '${c.value.registry}=${c.key}'), ',')
  SOURCE_ACR_RESOURCE_IDS: sourceAcrResourceIds
}
// A Key Vault reference, resolved by the platform with the identity in keyVaultReferenceIdentity.
// Set only when a token was given: a reference to a missing secret would reach the code as its own text.
var secretSettings = empty(dockerHubToken) ? {} : {
  DOCKERHUB_TOKEN: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.dockerHubTokenUri})'
}

// REGISTRY_<NAME>_USERNAME, and REGISTRY_<NAME>_PASSWORD as a Key Vault reference to the secret
// app/keyvault.bicep stores (registry-<name>-password), for each private source registry
var registrySettings = union(
  toObject(items(registryCredentials), c => 'REGISTRY_${c.key}_USERNAME', c => c.value.username),
  toObject(items(registryCredentials), c => 'REGISTRY_${c.key}_PASSWORD',
    c => '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.secretsUri}registry-${toLower(c.key)}-password)'))

module app 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    location: location
    tags: union(tags, { 'azd-service-name': 'airlock' })
    name: functionAppName
    planName: 'plan-${token}'
    identityId: identities.outputs.appIdentityId
    deploymentContainerUrl: '${storage.outputs.blobEndpoint}${deploymentContainerName}'
    pythonVersion: pythonVersion
    maximumInstanceCount: maximumInstanceCount
    subnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    appSettings: union(appSettings, secretSettings, registrySettings)
  }
  dependsOn: [storageAccess, keyVault]
}

// Outputs: azd stores them in the environment; scripts/postdeploy.sh, scripts/smoke.sh and the
// pipelines read them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AZURE_FUNCTION_APP_URL string = app.outputs.url
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output MANIFESTS_CONTAINER string = manifestsContainerName
output OUTCOMES_CONTAINER string = outcomesContainerName
output DEAD_LETTER_CONTAINER string = deadLetterContainerName
output STORAGE_SYSTEM_TOPIC_NAME string = storageTopic.outputs.name
output REGISTRY_SYSTEM_TOPIC_NAME string = registryTopic.outputs.name
output REGISTRY_SYSTEM_TOPIC_RESOURCE_GROUP string = registryTopicResourceGroupName
output EVENT_GRID_IDENTITY_ID string = identities.outputs.eventGridIdentityId
output ACR_SUBSCRIPTION_ID string = registrySubscriptionId
output ACR_RESOURCE_GROUP string = registryResourceGroupName
output ACR_NAME string = registryName
output ACR_LOGIN_SERVER string = registryAccess.outputs.loginServer
