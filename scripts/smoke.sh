#!/usr/bin/env bash
# Smoke test of a deployment made by `azd up` (docs/deployment.md), from the repository root:
#   1. GET /api/health with the function key (storage, ARM and the registry reachable);
#   2. upload a one-line sample manifest to the manifests container (Entra ID auth, as the pipelines do);
#   3. wait for its outcome record (python -m shared runs wait) and fail unless the run succeeded.
# Every az command names the azd environment's subscription (AZURE_SUBSCRIPTION_ID: the Azure CLI's
# default subscription may be another one) and the app is reached at its URL output (AZURE_FUNCTION_APP_URL).
# Needs: azd (signed in, the environment selected), the Azure CLI (az login), Python with
# requirements.txt installed (.venv/bin/python after scripts/setup.sh, or python3). The function key
# goes only into the request header: it is never printed.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(azd env get-values)"
: "${AZURE_FUNCTION_APP_NAME:?no azd environment: run azd up first}"
: "${AZURE_SUBSCRIPTION_ID:?}" "${AZURE_FUNCTION_APP_URL:?}"
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
SAMPLE_SOURCE="${SMOKE_SOURCE:-mcr.microsoft.com/mcr/hello-world:latest}"

echo "smoke: 1/3 health of ${AZURE_FUNCTION_APP_URL}"
key="$(az functionapp keys list --subscription "$AZURE_SUBSCRIPTION_ID" --resource-group "$AZURE_RESOURCE_GROUP" \
        --name "$AZURE_FUNCTION_APP_NAME" --query functionKeys.default --output tsv)"
health="$(curl --silent --show-error --max-time 120 --header "x-functions-key: ${key}" \
          --write-out '\n%{http_code}' "${AZURE_FUNCTION_APP_URL}/api/health")"
unset key
code="${health##*$'\n'}"
echo "${health%$'\n'*}"
if [ "$code" != "200" ]; then
  echo "smoke: /api/health answered ${code}" >&2
  exit 1
fi

name="smoke-$(date -u +%Y%m%dT%H%M%SZ).txt"
file="$(mktemp)"
trap 'rm -f "$file"' EXIT
printf '%s => smoke/hello-world:latest\n' "$SAMPLE_SOURCE" > "$file"
echo "smoke: 2/3 uploading ${name} (${SAMPLE_SOURCE}) to ${MANIFESTS_CONTAINER}"
az storage blob upload --subscription "$AZURE_SUBSCRIPTION_ID" --auth-mode login \
  --account-name "$AZURE_STORAGE_ACCOUNT_NAME" --container-name "$MANIFESTS_CONTAINER" --name "$name" \
  --file "$file" --only-show-errors --output none

echo "smoke: 3/3 waiting for its outcome record"
AZURE_SUBSCRIPTION_ID="$ACR_SUBSCRIPTION_ID" ACR_RESOURCE_GROUP="$ACR_RESOURCE_GROUP" ACR_NAME="$ACR_NAME" \
ACR_LOGIN_SERVER="$ACR_LOGIN_SERVER" AzureWebJobsStorage__blobServiceUri="$AZURE_STORAGE_BLOB_ENDPOINT" \
MANIFESTS_CONTAINER="$MANIFESTS_CONTAINER" OUTCOMES_CONTAINER="$OUTCOMES_CONTAINER" \
  "$PY" -m shared runs wait --file "$file" --name "$name" --timeout 600 --interval 5
echo "smoke: ok"
