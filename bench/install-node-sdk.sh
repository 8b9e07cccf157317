#!/usr/bin/env bash
# Installs the official Azure IoT Node SDK (device provisioning over MQTT) into bench/node/
# with npm, for the side-by-side benchmark. Needs node and npm.
set -euo pipefail
cd "$(dirname "$0")/node"
npm install --no-audit --no-fund --loglevel=error
echo "installed: $(node -e 'console.log(require("azure-iot-provisioning-device/package.json").version)') (azure-iot-provisioning-device)"
