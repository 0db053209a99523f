#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages (docker-registry, skopeo),
# Azurite and the Sigstore test tools (@sigstore/sign, @sigstore/mock, @sigstore/oci) from the npm
# registry (package-lock.json), Python dependencies into .venv.
# Re-running it only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x node_modules/.bin/azurite ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements-cli.txt requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python dependencies into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2>&1 \
    | grep -v '^WARNING: Location' || true
  .venv/bin/python -c "import azure.functions, azure.mgmt.containerregistrytasks, azure.storage.queue, starlette, uvicorn, httptools, uvloop, trustme, opentelemetry.sdk, azure.monitor.opentelemetry, schemathesis, sigstore, re2"
  echo "$want" > "$stamp"
fi
echo "setup: ok"
