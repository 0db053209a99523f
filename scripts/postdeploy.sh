#!/usr/bin/env sh
# azd postdeploy hook (azure.yaml): create the Event Grid subscriptions once the code is deployed.
# The webhook URLs need the Functions host's system keys (blobs_extension, eventgrid_extension),
# which exist only after the host has started with the blob and Event Grid functions; Event Grid
# validates each endpoint when the subscription is created. infra/subscriptions.bicep reads the keys
# with listKeys inside the deployment: no key passes through this script or its output.
# Re-running it is safe (the deployment is idempotent). Needs the Azure CLI, signed in (az login).
# Everything it targets comes from the azd environment: the subscription azd deployed to
# (AZURE_SUBSCRIPTION_ID, passed to every az command: the CLI's default subscription may be another one)
# and the app's URL (AZURE_FUNCTION_APP_URL: Flex Consumption host names are not <app>.azurewebsites.net).
set -eu

: "${AZURE_RESOURCE_GROUP:?run through azd (azd up / azd deploy) or export the azd env first: eval \"\$(azd env get-values)\"}"
: "${AZURE_FUNCTION_APP_NAME:?}"
: "${AZURE_FUNCTION_APP_URL:?}"
: "${AZURE_SUBSCRIPTION_ID:?}"

site="/subscriptions/${AZURE_SUBSCRIPTION_ID}/resourceGroups/${AZURE_RESOURCE_GROUP}/providers/Microsoft.Web/sites/${AZURE_FUNCTION_APP_NAME}"
echo "postdeploy: waiting for the Functions host of ${AZURE_FUNCTION_APP_NAME} to create its extension keys"
tries=0
until [ "$(az rest --method post --uri "${site}/host/default/listkeys?api-version=2024-04-01" \
          --query "systemKeys.blobs_extension != null && systemKeys.eventgrid_extension != null" \
          --output tsv 2>/dev/null || true)" = "true" ]; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "postdeploy: the host has no blobs_extension/eventgrid_extension key after 10 minutes;" >&2
    echo "  check the deployment (az functionapp function list --subscription ${AZURE_SUBSCRIPTION_ID}" \
         "-g ${AZURE_RESOURCE_GROUP} -n ${AZURE_FUNCTION_APP_NAME})" >&2
    exit 1
  fi
  # a request wakes the host (scale from zero) so that it indexes the functions
  curl --silent --output /dev/null --max-time 20 "${AZURE_FUNCTION_APP_URL}/" || true
  sleep 10
done

echo "postdeploy: creating the Event Grid subscriptions (infra/subscriptions.bicep)"
az deployment group create \
  --subscription "${AZURE_SUBSCRIPTION_ID}" \
  --resource-group "${AZURE_RESOURCE_GROUP}" \
  --name airlock-event-subscriptions \
  --template-file infra/subscriptions.bicep \
  --parameters \
    functionAppName="${AZURE_FUNCTION_APP_NAME}" \
    storageAccountName="${AZURE_STORAGE_ACCOUNT_NAME}" \
    storageSystemTopicName="${STORAGE_SYSTEM_TOPIC_NAME}" \
    registrySystemTopicName="${REGISTRY_SYSTEM_TOPIC_NAME}" \
    registrySubscriptionId="${ACR_SUBSCRIPTION_ID}" \
    registrySystemTopicResourceGroupName="${REGISTRY_SYSTEM_TOPIC_RESOURCE_GROUP}" \
    manifestsContainerName="${MANIFESTS_CONTAINER}" \
    deadLetterContainerName="${DEAD_LETTER_CONTAINER}" \
    eventGridIdentityId="${EVENT_GRID_IDENTITY_ID}" \
  --output none
echo "postdeploy: done; try scripts/smoke.sh"
