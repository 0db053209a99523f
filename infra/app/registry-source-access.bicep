// Deployed into the resource group of a source ACR (SOURCE_ACR_RESOURCE_IDS, another registry the app
// imports from by resource id, possibly in another subscription): the app's role on it. importImage with
// source.resourceId copies with the caller's identity, which needs pull/read on the source registry; the
// plan reads the source's tags and manifests on its data plane with the same identity.
param registryName string
param appPrincipalId string

// Microsoft.ContainerRegistry/registries/pull/read (and read): docs/settings.md, "Source registry credentials"
var containerRegistryDataImporterAndDataReader = '577a9874-89fd-4f24-9dbd-b5034d0ad23a'

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' existing = {
  name: registryName
}

resource sourceReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appPrincipalId, containerRegistryDataImporterAndDataReader)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', containerRegistryDataImporterAndDataReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}
