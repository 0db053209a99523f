// Two user-assigned identities: the app's (storage, ACR, Key Vault, Application Insights) and Event
// Grid's (its system topics dead-letter undeliverable events into storage with it).
param location string
param tags object
param appIdentityName string
param eventGridIdentityName string

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: appIdentityName
  location: location
  tags: tags
}

resource eventGridIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: eventGridIdentityName
  location: location
  tags: tags
}

output appIdentityId string = appIdentity.id
output appClientId string = appIdentity.properties.clientId
output appPrincipalId string = appIdentity.properties.principalId
output eventGridIdentityId string = eventGridIdentity.id
output eventGridPrincipalId string = eventGridIdentity.properties.principalId
