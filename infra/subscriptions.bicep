// The Event Grid subscriptions, deployed by scripts/postdeploy.sh after `azd deploy` (resource-group
// scope, the resource group azd created). They need the code deployed and the host started: the
// webhook URLs carry the host's system keys (read here with listKeys, never written anywhere), and
// Event Grid validates each endpoint when the subscription is created.
//
// manifest_uploaded (blob trigger, source EventGrid): BlobCreated in the manifests container, to the
//   blobs extension webhook (/runtime/webhooks/blobs, functionName=Host.Functions.<function>).
// registry_event (Event Grid trigger): the ACR's image and chart events, to the eventgrid extension
//   webhook (/runtime/webhooks/eventgrid, functionName=<function>).
// Both: a retry policy, and undeliverable events dead-lettered to a container with Event Grid's
// managed identity (storage shared-key access is disabled).
param functionAppName string
param storageAccountName string
param storageSystemTopicName string
param registrySystemTopicName string
param registrySubscriptionId string
param registrySystemTopicResourceGroupName string
param manifestsContainerName string
param deadLetterContainerName string
param eventGridIdentityId string

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource host 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: site
  name: 'default'
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource storageTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: storageSystemTopicName
}

var deadLetter = {
  identity: {
    type: 'UserAssigned'
    userAssignedIdentity: eventGridIdentityId
  }
  deadLetterDestination: {
    endpointType: 'StorageBlob'
    properties: {
      resourceId: account.id
      blobContainerName: deadLetterContainerName
    }
  }
}

var retryPolicy = {
  maxDeliveryAttempts: 30
  eventTimeToLiveInMinutes: 1440
}

resource manifestUploaded 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: storageTopic
  name: 'manifest-uploaded'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.manifest_uploaded&code=${host.listKeys().systemKeys.blobs_extension}'
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${manifestsContainerName}/blobs/'
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}

module registryEvent 'app/registry-subscription.bicep' = {
  name: 'registry-event-subscription'
  scope: resourceGroup(registrySubscriptionId, registrySystemTopicResourceGroupName)
  params: {
    systemTopicName: registrySystemTopicName
    name: 'registry-event'
    endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/eventgrid?functionName=registry_event&code=${host.listKeys().systemKeys.eventgrid_extension}'
    includedEventTypes: [
      'Microsoft.ContainerRegistry.ImagePushed'
      'Microsoft.ContainerRegistry.ImageDeleted'
      'Microsoft.ContainerRegistry.ChartPushed'
      'Microsoft.ContainerRegistry.ChartDeleted'
    ]
    retryPolicy: retryPolicy
    deadLetter: deadLetter
  }
}
