// The Event Grid system topic on the registry, deployed into the resource group it lives in (a system topic
// lives in its source's subscription, usually beside it). Event Grid allows one system topic per source, and
// any event subscription made on the registry in the portal creates one: a registry that already has a topic
// gets that topic reused (main.bicep passes its name, location, tags and identity), never a second one.
// Either way the topic carries Event Grid's user-assigned identity, with which the registry event
// subscription dead-letters (infra/subscriptions.bicep); a reused topic keeps the identities it had.
param name string
param location string
param tags object
param registryId string
param eventGridIdentityId string
@description('The reused topic\'s identity as ARM returns it (type, userAssignedIdentities); {} for a new topic.')
param existingIdentity object = {}

// ARM returns each user-assigned identity with its principalId and clientId; a PUT takes {} for each
var keptUserAssigned = toObject(items(existingIdentity.?userAssignedIdentities ?? {}), i => i.key, i => {})
var keepSystemAssigned = contains(existingIdentity.?type ?? 'None', 'SystemAssigned')

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: keepSystemAssigned ? 'SystemAssigned, UserAssigned' : 'UserAssigned'
    userAssignedIdentities: union(keptUserAssigned, { '${eventGridIdentityId}': {} })
  }
  properties: {
    source: registryId
    topicType: 'Microsoft.ContainerRegistry.Registries'
  }
}

output name string = topic.name
