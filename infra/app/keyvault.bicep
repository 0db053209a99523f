// Key Vault (Azure RBAC, no access policies) holding DOCKERHUB_TOKEN and the password of each private
// source registry (registry-<name>-password for REGISTRY_<NAME>_PASSWORD). The app reads them only
// through Key Vault references in its app settings, with the Key Vault Secrets User role on the vault.
// Soft delete is on (it cannot be turned off); purge protection is not: it would keep the name of a deleted
// vault taken for the whole retention period, with no way to purge it, so `azd up` after `azd down` would
// collide with it. The property is left out rather than set to false (it does not accept false, and a vault
// created with it keeps it: such an environment gets a new name with KEY_VAULT_NAME, docs/deployment.md).
param location string
param tags object
param name string
param vnetEnabled bool
@secure()
param dockerHubToken string
// NAME -> { registry, username, password }: each password becomes the secret registry-<name>-password
@secure()
param registryCredentials object = {}
param appPrincipalId string

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var secretName = 'dockerhub-token'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 30
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource token 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(dockerHubToken)) {
  parent: vault
  name: secretName
  properties: {
    value: dockerHubToken
    contentType: 'Docker Hub access token (DOCKERHUB_TOKEN)'
  }
}

resource registryPasswords 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for c in items(registryCredentials): {
  parent: vault
  name: 'registry-${toLower(c.key)}-password'
  properties: {
    value: c.value.password
    contentType: 'password of source registry ${c.value.registry} (REGISTRY_${c.key}_PASSWORD)'
  }
}]

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output id string = vault.id
output name string = vault.name
// the versionless secret URI: a Key Vault reference to it follows rotation
output dockerHubTokenUri string = '${vault.properties.vaultUri}secrets/${secretName}'
// where the registry passwords' versionless URIs start (a Key Vault reference to one follows rotation)
output secretsUri string = '${vault.properties.vaultUri}secrets/'
