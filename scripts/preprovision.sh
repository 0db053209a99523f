#!/usr/bin/env sh
# azd preprovision hook (azure.yaml): with an existing registry (ACR_RESOURCE_ID), find the Event Grid
# system topic it already has, so that infra/ reuses it instead of creating a second one. Event Grid
# allows one system topic per source, and any event subscription made on the registry (in the portal, for
# instance) creates one: provisioning a new topic on such a registry fails. The topic found (name and
# resource group) goes into the azd environment as ACR_SYSTEM_TOPIC_NAME and ACR_SYSTEM_TOPIC_RESOURCE_GROUP,
# which infra/main.parameters.json passes to main.bicep; none found clears them (a new topic is created).
# Without the right to list system topics in the registry's subscription, the values already set (by hand:
# azd env set ACR_SYSTEM_TOPIC_NAME ...) stand. Outside azd: eval "$(azd env get-values)" first.
# Needs the Azure CLI, signed in (az login), and azd.
set -eu

registry="${ACR_RESOURCE_ID:-}"
[ -n "$registry" ] || exit 0  # a new registry gets a new topic

# /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}
wanted="$(printf '%s' "$registry" | tr '[:upper:]' '[:lower:]' | sed 's:/*$::')"
case "$wanted" in
  /subscriptions/*/resourcegroups/*/providers/microsoft.containerregistry/registries/*) ;;
  *)
    echo "preprovision: ACR_RESOURCE_ID is not a container registry's resource id: ${registry}" >&2
    echo "  expected /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.ContainerRegistry/registries/<name>" \
      >&2
    exit 1 ;;
esac
subscription="$(printf '%s' "$registry" | cut -d/ -f3)"

# a system topic lives in its source's subscription
if ! topics="$(az eventgrid system-topic list --subscription "$subscription" \
                 --query "[].[name, resourceGroup, source]" --output tsv)"; then
  echo "preprovision: could not list the Event Grid system topics of subscription ${subscription};" >&2
  echo "  keeping ACR_SYSTEM_TOPIC_NAME='${ACR_SYSTEM_TOPIC_NAME:-}'" \
       "ACR_SYSTEM_TOPIC_RESOURCE_GROUP='${ACR_SYSTEM_TOPIC_RESOURCE_GROUP:-}'" >&2
  echo "  (a registry that has a system topic needs its name there: docs/deployment.md)" >&2
  exit 0
fi
# resource ids compare without case
found="$(printf '%s\n' "$topics" | tr -d '\r' | awk -F '\t' -v wanted="$wanted" \
           'tolower($3) == wanted { print $1 "\t" $2; exit }')"
name="${found%%	*}"
group="${found#*	}"

if [ -n "$name" ]; then
  echo "preprovision: the registry already has Event Grid system topic ${name} (resource group ${group}): reusing it"
else
  echo "preprovision: the registry has no Event Grid system topic yet: one will be created"
fi
if [ "$name" != "${ACR_SYSTEM_TOPIC_NAME:-}" ] || [ "$group" != "${ACR_SYSTEM_TOPIC_RESOURCE_GROUP:-}" ]; then
  azd env set ACR_SYSTEM_TOPIC_NAME "$name"
  azd env set ACR_SYSTEM_TOPIC_RESOURCE_GROUP "$group"
fi
