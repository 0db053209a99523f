// Role assignments on the storage account, by built-in role definition id (infra/ROLES.md).
// The app: the Functions host's documented needs for an identity-based AzureWebJobsStorage on this
// account (blob owner, queue and table contributor); they cover the app's own containers.
// Event Grid: writes undeliverable events into the dead-letter container only.
// Operators (the azd user, the pipeline): upload manifests, read outcome records; nothing else.
param storageAccountName string
param appPrincipalId string
param eventGridPrincipalId string
param operators array // [{ id: object id, type: 'User' | 'ServicePrincipal' }], each principal once
param manifestsContainerName string
param outcomesContainerName string
param deadLetterContainerName string

var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource manifests 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: manifestsContainerName
}

resource outcomes 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: outcomesContainerName
}

resource deadLetter 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource appRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [storageBlobDataOwner, storageQueueDataContributor, storageTableDataContributor]: {
  name: guid(account.id, appPrincipalId, role)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource eventGridDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetter.id, eventGridPrincipalId, storageBlobDataContributor)
  scope: deadLetter
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource operatorUpload 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for operator in operators: {
  name: guid(manifests.id, operator.id, storageBlobDataContributor)
  scope: manifests
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: operator.id
    principalType: operator.type
  }
}]

resource operatorRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for operator in operators: {
  name: guid(outcomes.id, operator.id, storageBlobDataReader)
  scope: outcomes
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
    principalId: operator.id
    principalType: operator.type
  }
}]
