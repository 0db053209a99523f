// Deployed into the registry's resource group (a new registry's, or an existing one's, possibly in
// another subscription): the app's roles on the ACR and the operators' pull role. The Event Grid system
// topic on the ACR is app/registry-topic.bicep's (it may live in another resource group).
param registryName string
param tags object
param appPrincipalId string
param operators array // [{ id: object id, type: 'User' | 'ServicePrincipal' }], each principal once
param buildsEnabled bool

// importImage (and reading tags and manifests on the data plane): docs/deployment.md
var containerRegistryDataImporterAndDataReader = '577a9874-89fd-4f24-9dbd-b5034d0ad23a'
// quick builds, task runs, agent pools (only when builds are used): docs/builds.md
var containerRegistryTasksContributor = 'fb382eab-e894-4461-af04-94435c366c3f'
// operators and pipelines: `plan` reads target digests on the data plane
var acrPull = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
// publishing the verification material (airlock/trust) on the data plane: the importer role cannot push
// (docs/trust.md). The smallest built-in role that pushes in a registry with RBAC-only permissions.
var acrPush = '8311e382-0749-4cb8-b61a-304f252e45ec'

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' existing = {
  name: registryName
}

resource importer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appPrincipalId, containerRegistryDataImporterAndDataReader)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', containerRegistryDataImporterAndDataReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource trustPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appPrincipalId, acrPush)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPush)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource tasks 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (buildsEnabled) {
  name: guid(registry.id, appPrincipalId, containerRegistryTasksContributor)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', containerRegistryTasksContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource operatorPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for operator in operators: {
  name: guid(registry.id, operator.id, acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPull)
    principalId: operator.id
    principalType: operator.type
  }
}]

output id string = registry.id
output location string = registry.location
output loginServer string = registry.properties.loginServer
