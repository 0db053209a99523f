// A new Premium ACR (Premium: private endpoints and dedicated agent pools). Its network rule bypass
// stays on for trusted Azure services: importImage runs as the registry service and needs it when
// public access is off. No admin user, no anonymous pull.
param location string
param tags object
param name string
param vnetEnabled bool

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: 'Premium' }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkRuleBypassOptions: 'AzureServices'
    networkRuleSet: { defaultAction: vnetEnabled ? 'Deny' : 'Allow' }
  }
}

output id string = registry.id
output loginServer string = registry.properties.loginServer
