// Optional private networking: a VNet with an integration subnet for the app (delegated to
// Microsoft.App/environments, as Flex Consumption requires) and a subnet for private endpoints;
// private endpoints for storage (blob, queue, table), Key Vault and the ACR, each with its private
// DNS zone linked to the VNet.
param location string
param tags object
param vnetName string
param storageAccountId string
param keyVaultId string
param registryId string

var endpoints = [
  { name: 'blob', id: storageAccountId, group: 'blob', zone: 'privatelink.blob.${environment().suffixes.storage}' }
  { name: 'queue', id: storageAccountId, group: 'queue', zone: 'privatelink.queue.${environment().suffixes.storage}' }
  { name: 'table', id: storageAccountId, group: 'table', zone: 'privatelink.table.${environment().suffixes.storage}' }
  { name: 'vault', id: keyVaultId, group: 'vault', zone: 'privatelink.vaultcore.azure.net' }
  { name: 'registry', id: registryId, group: 'registry', zone: 'privatelink.azurecr.io' }
]

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: { addressPrefixes: ['10.40.0.0/16'] }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: '10.40.1.0/24'
          delegations: [
            { name: 'flex', properties: { serviceName: 'Microsoft.App/environments' } }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: '10.40.2.0/24'
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for e in endpoints: {
  name: e.zone
  location: 'global'
  tags: tags
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (e, i) in endpoints: {
  parent: zones[i]
  name: '${vnetName}-link'
  location: 'global'
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnet.id }
  }
}]

// A private endpoint lives in the VNet's region, whatever the region of its target.
resource privateEndpoints 'Microsoft.Network/privateEndpoints@2023-11-01' = [for e in endpoints: {
  name: 'pe-${e.name}-${vnetName}'
  location: location
  tags: tags
  properties: {
    subnet: { id: '${vnet.id}/subnets/private-endpoints' }
    privateLinkServiceConnections: [
      {
        name: e.name
        properties: {
          privateLinkServiceId: e.id
          groupIds: [e.group]
        }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (e, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      { name: e.name, properties: { privateDnsZoneId: zones[i].id } }
    ]
  }
}]

output appSubnetId string = '${vnet.id}/subnets/app'
