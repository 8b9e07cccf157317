// The official Azure IoT Node SDK provisioning N devices, C at a time, each with its own client
// and connection, against a DPS endpoint (the mock broker). Prints one JSON object with the same
// fields as `dps bench --json`.
//
//   NODE_EXTRA_CA_CERTS=pki/ca.pem node bench.js --endpoint localhost:8883 --id-scope 0ne00000001 \
//       --certs pki --devices 1000 --concurrency 50
//
// Device certificates are read from <certs>/bench-0001.pem/.key ... (`dps-mock-broker pki --count N`).
//
// With --hold, like `dps bench --hold`: each device's Mqtt transport connects and sends its
// register request, all stay connected until every device has, and the resident memory then is
// compared with the reading before the first connection.
'use strict';

const fs = require('fs');
const path = require('path');
const { Mqtt } = require('azure-iot-provisioning-device-mqtt');
const { X509Security } = require('azure-iot-security-x509');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback === undefined) throw new Error(`--${name} is required`);
  return fallback;
}

const endpoint = arg('endpoint');
const idScope = arg('id-scope');
const certs = arg('certs');
const devices = parseInt(arg('devices', '100'), 10);
const concurrency = parseInt(arg('concurrency', '50'), 10);
const hold = process.argv.includes('--hold');

const id = (i) => `bench-${String(i + 1).padStart(4, '0')}`;

// Credentials are read before the clock starts, as `dps bench` makes its certificates first.
const credentials = [];
for (let i = 0; i < devices; i++) {
  credentials.push({
    cert: fs.readFileSync(path.join(certs, `${id(i)}.pem`), 'utf8'),
    key: fs.readFileSync(path.join(certs, `${id(i)}.key`), 'utf8'),
  });
}

function provision(i) {
  const security = new X509Security(id(i), credentials[i]);
  const client = ProvisioningDeviceClient.create(endpoint, idScope, new Mqtt(), security);
  return new Promise((resolve) => {
    client.register((err, result) => resolve(err ? { err } : { result }));
  });
}

// --hold: the SDK's Mqtt transport alone, which stays connected after answering.
function connectAndRegister(i) {
  const transport = new Mqtt();
  transport.setAuthentication(credentials[i]);
  const request = { registrationId: id(i), provisioningHost: endpoint, idScope };
  return new Promise((resolve) => {
    transport.registrationRequest(request, (err, result) => resolve(err ? { err, transport } : { result, transport }));
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  const index = Math.min(Math.max(Math.ceil(sorted.length * p), 1), sorted.length) - 1;
  return sorted[index];
}

async function main() {
  const rssBefore = process.memoryUsage().rss;
  const held = [];
  const cpuBefore = process.cpuUsage();
  const started = process.hrtime.bigint();
  let next = 0;
  const latencies = [];
  let failed = 0;
  let firstError = null;
  async function worker() {
    while (next < devices) {
      const i = next++;
      const t0 = process.hrtime.bigint();
      const outcome = await (hold ? connectAndRegister(i) : provision(i));
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (outcome.transport) held.push(outcome.transport);
      const wanted = hold ? 'assigning' : 'assigned';
      if (outcome.err || !outcome.result || outcome.result.status !== wanted) {
        failed++;
        if (!firstError) firstError = String(outcome.err || JSON.stringify(outcome.result));
      } else {
        latencies.push(ms);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(concurrency, 1) }, worker));
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  const cpu = process.cpuUsage(cpuBefore);
  const rssConnected = process.memoryUsage().rss;
  await Promise.all(held.map((t) => new Promise((resolve) => t.disconnect(() => resolve()))));
  latencies.sort((a, b) => a - b);
  const report = {
    kind: hold ? 'node-sdk-hold' : 'node-sdk',
    sdk: require('azure-iot-provisioning-device/package.json').version,
    node: process.version,
    devices,
    concurrency,
    registrations_per_sec: (devices - failed) / (wallMs / 1000),
    wall_ms: wallMs,
    failed,
    p50_ms: percentile(latencies, 0.5),
    p95_ms: percentile(latencies, 0.95),
    p99_ms: percentile(latencies, 0.99),
    peak_rss_mib: process.resourceUsage().maxRSS / 1024,
    cpu_seconds: (cpu.user + cpu.system) / 1e6,
    first_error: firstError,
  };
  if (hold) {
    const mib = (bytes) => bytes / (1024 * 1024);
    report.before_rss_mib = mib(rssBefore);
    report.connected_rss_mib = mib(rssConnected);
    report.kib_per_connected_device = (rssConnected - rssBefore) / 1024 / Math.max(devices, 1);
  }
  console.log(JSON.stringify(report));
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
