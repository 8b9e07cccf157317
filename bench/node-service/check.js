// The official Node service SDK against the mock DPS's service API: every call a test author
// makes to set the mock up and read back what devices got. Usage: node check.js CONNECTION_STRING
// (the mock on port 443, NODE_EXTRA_CA_CERTS naming its CA). Prints one line per step; exits 1
// on the first that fails.
'use strict';
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');

const client = ProvisioningServiceClient.fromConnectionString(process.argv[2]);
const groupKey = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=';

// `Query.next()` without a callback never settles in this SDK version; the callback form works.
function page(query, token) {
  return new Promise((resolve, reject) => {
    const done = (err, result) => (err ? reject(err) : resolve(result));
    if (token) query.next(token, done); else query.next(done);
  });
}

// Likewise, the bulk operation is called with a callback.
function bulk(operation) {
  return new Promise((resolve, reject) => {
    client.runBulkEnrollmentOperation(operation, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

function check(what, ok) {
  console.log(`${ok ? 'ok' : 'FAILED'}: ${what}`);
  if (!ok) process.exit(1);
}

async function main() {
  if (process.argv[3] === 'after-device') {
    return afterDevice(process.argv[4]);
  }
  const group = {
    enrollmentGroupId: 'node-group',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: groupKey } },
    allocationPolicy: 'static',
    iotHubs: ['hub-node.example'],
  };
  const made = (await client.createOrUpdateEnrollmentGroup(group)).responseBody;
  check('createOrUpdateEnrollmentGroup returns an etag', !!made.etag);
  const read = (await client.getEnrollmentGroup('node-group')).responseBody;
  check('getEnrollmentGroup reads it back', read.enrollmentGroupId === 'node-group' && read.allocationPolicy === 'static');

  const individual = {
    registrationId: 'node:dev-1',
    attestation: { type: 'symmetricKey', symmetricKey: {} },
    provisioningStatus: 'enabled',
  };
  const created = (await client.createOrUpdateIndividualEnrollment(individual)).responseBody;
  check('the service makes the keys of a symmetric-key enrollment', !!created.attestation.symmetricKey.primaryKey);
  const stale = Object.assign({}, created, { etag: '"stale"' });
  let refused = null;
  try { await client.createOrUpdateIndividualEnrollment(stale); } catch (e) { refused = e; }
  check('a stale etag is refused (412)', refused && refused.response && refused.response.statusCode === 412);
  const updated = (await client.createOrUpdateIndividualEnrollment(Object.assign({}, created, { provisioningStatus: 'disabled' }))).responseBody;
  check('an update with the current etag is taken', updated.provisioningStatus === 'disabled' && updated.etag !== created.etag);

  const made3 = await bulk({
    mode: 'create',
    enrollments: ['a', 'b', 'c'].map((id) => ({ registrationId: `bulk-${id}`, attestation: { type: 'symmetricKey', symmetricKey: {} } })),
  });
  check('runBulkEnrollmentOperation creates three', made3.isSuccessful === true);

  const query = client.createIndividualEnrollmentQuery({ query: '*' }, 2);
  const first = await page(query);
  check('a query pages (2 of 4)', first.length === 2 && query.hasMoreResults);
  const rest = await page(query, query.continuationToken);
  check('the next page has the rest', rest.length === 2 && !query.hasMoreResults);

  const groups = await page(client.createEnrollmentGroupQuery({ query: '*' }));
  check('the group query finds the group', groups.some((g) => g.enrollmentGroupId === 'node-group'));
  const keys = await new Promise((resolve, reject) =>
    client.getIndividualEnrollmentAttestationMechanism('bulk-a', (err, r) => (err ? reject(err) : resolve(r))));
  check('getIndividualEnrollmentAttestationMechanism has the keys', !!keys.symmetricKey.primaryKey);

  await client.deleteIndividualEnrollment('node:dev-1');
  let gone = null;
  try { await client.getIndividualEnrollment('node:dev-1'); } catch (e) { gone = e; }
  check('a deleted enrollment is a 404', gone && gone.response && gone.response.statusCode === 404);
}

async function afterDevice(id) {
  const state = (await client.getDeviceRegistrationState(id)).responseBody;
  check('getDeviceRegistrationState shows the device on the group\'s hub', state.assignedHub === 'hub-node.example' && state.substatus === 'initialAssignment');
  const registrations = await page(client.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, 'node-group'));
  check('the group\'s registration query lists it', registrations.some((r) => r.registrationId === id));
  await client.deleteDeviceRegistrationState(id);
  let gone = null;
  try { await client.getDeviceRegistrationState(id); } catch (e) { gone = e; }
  check('deleteDeviceRegistrationState deletes it', gone && gone.response && gone.response.statusCode === 404);
}

main().catch((e) => { console.log(`FAILED: ${e.stack || e}`); process.exit(1); });
