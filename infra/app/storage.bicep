// The one storage account: the Functions host's own storage (AzureWebJobsStorage), the Flex
// deployment package, the manifests and outcomes containers, the dead-letter container and the run
// queues. Shared-key access is disabled: everything authenticates with Entra ID.
param location string
param tags object
param name string
param vnetEnabled bool
param containerNames array
param queueNames array
// the queued runs' working blobs (<outcomes container>/runs-work/): deleted this many days after their
// last change; longer than a queue message lives (7 days), so no late delivery finds its run's
// final marker gone (docs/architecture.md, "Run lifecycle")
param runsWorkPrefix string
param runsWorkRetentionDays int = 14
// the cached signature verdicts (<outcomes container>/verdicts/, TRUST_VERDICT_PREFIX): a verdict is
// reused for at most TRUST_VERDICT_TTL_SECONDS (30 days at most) and rewritten when verified again, so
// one unchanged for longer is never read again; deleting one early only costs a new verification
param verdictsPrefix string
param verdictsRetentionDays int = 31

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    // With the VNet: deny by default. Trusted Azure services stay allowed (Event Grid dead-lettering
    // with its managed identity); the app and pipeline agents inside the VNet use the private endpoints.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in containerNames: {
  parent: blobService
  name: container
  properties: { publicAccess: 'None' }
}]

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'runs-work'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: [runsWorkPrefix]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: runsWorkRetentionDays
                }
              }
            }
          }
        }
        {
          enabled: true
          name: 'trust-verdicts'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: [verdictsPrefix]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: verdictsRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queue in queueNames: {
  parent: queueService
  name: queue
}]

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
