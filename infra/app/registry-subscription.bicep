// The ACR system topic's subscription (in the topic's resource group, usually the registry's). The endpoint
// URL carries the eventgrid_extension system key: a secure parameter, never logged by ARM.
param systemTopicName string
param name string
@secure()
param endpointUrl string
param includedEventTypes array
param retryPolicy object
param deadLetter object

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource eventSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: name
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: endpointUrl
      }
    }
    filter: {
      includedEventTypes: includedEventTypes
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}
