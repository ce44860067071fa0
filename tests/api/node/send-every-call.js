#!/usr/bin/env node
// Sends one call of every type the library has to a Cairn API, with the library's DEFAULT
// settings (batching on; @rudderstack/rudder-sdk-node gzips by default, @segment/analytics-node
// has no gzip and sends plain JSON), then flushes and exits 0 only when the library reported every
// call delivered. Any error the library reports (per-call callback, 'error' event, errorHandler)
// makes it exit 1. Run by tests/api/test_official_node_libraries.py.
//
//   node send-every-call.js segment|rudderstack API_URL WRITE_KEY
//
// On stdout, one JSON line: what the library sent (each HTTP request: status, headers without the
// key, the call types in its batch) and what it reported (errors), for the test to assert on.
'use strict';

const zlib = require('zlib');

const [library, host, writeKey] = process.argv.slice(2);
if (!['segment', 'rudderstack'].includes(library) || !host || !writeKey) {
  console.error('usage: node send-every-call.js segment|rudderstack API_URL WRITE_KEY');
  process.exit(2);
}

const requests = [];
const errors = [];
const delivered = [];

function callback(type) {
  return (err) => {
    if (err) errors.push(`${type}: ${err && (err.message || err)}`);
    else delivered.push(type);
  };
}

function authScheme(headers) {
  const value = Object.entries(headers || {}).find(([name]) => name.toLowerCase() === 'authorization');
  return value ? String(value[1]).split(' ')[0] : null;
}

function withoutKey(headers) {
  return Object.fromEntries(Object.entries(headers || {})
    .filter(([name]) => name.toLowerCase() !== 'authorization')
    .map(([name, value]) => [name.toLowerCase(), String(value)]));
}

// The same calls, in the same order, as tests/api/test_official_libraries.py makes with the
// Python libraries: a visitor views a page, signs up, the visitor id is aliased to the user id.
function sendEveryCall(client) {
  client.page({ anonymousId: 'anon-9', name: 'Pricing',
                properties: { url: 'https://shop.example/pricing' } }, callback('page'));
  client.identify({ userId: 'u-9', traits: { email: 'ana@example.com', plan: 'trial' } },
                  callback('identify'));
  client.alias({ previousId: 'anon-9', userId: 'u-9' }, callback('alias'));
  client.track({ userId: 'u-9', event: 'cart_item_added', properties: { value: 25.5, sku: 'mug-01' } },
               callback('track'));
  client.screen({ userId: 'u-9', name: 'Checkout', properties: { step: 2 } }, callback('screen'));
  client.group({ userId: 'u-9', groupId: 'acme', traits: { name: 'Acme', plan: 'enterprise' } },
               callback('group'));
}

async function segment() {
  const { Analytics } = require('@segment/analytics-node');
  const client = new Analytics({ writeKey, host });
  client.on('error', (error) => errors.push(`error event: ${error.code}: ${error.reason}`));
  const pending = new Map();
  client.on('http_request', (request) => {
    const entry = {
      library: 'segment',
      url: request.url,
      headers: withoutKey(request.headers),
      auth: authScheme(request.headers),
      bytes: Buffer.byteLength(request.body),
      calls: JSON.parse(request.body).batch.map((call) => call.type),
    };
    requests.push(entry);
    pending.set(request.body, entry);
  });
  client.on('http_response', (response) => {
    const entry = pending.get(response.body);
    if (entry) entry.status = response.status;
  });
  sendEveryCall(client);
  await client.closeAndFlush();
}

async function rudderstack() {
  const Analytics = require('@rudderstack/rudder-sdk-node');
  const client = new Analytics(writeKey, {
    dataPlaneUrl: host,
    logLevel: 'error',
    errorHandler: (error) => errors.push(`errorHandler: ${error && (error.message || error)}`),
  });
  // Observes (does not change) what goes out: the final request of each batch and its answer.
  const record = (config, status) => {
    const body = Buffer.isBuffer(config.data) ? config.data : Buffer.from(String(config.data));
    const headers = config.headers && config.headers.toJSON ? config.headers.toJSON() : config.headers;
    const encoded = String(withoutKey(headers)['content-encoding'] || '') === 'gzip';
    const json = JSON.parse((encoded ? zlib.gunzipSync(body) : body).toString('utf8'));
    requests.push({
      library: 'rudderstack',
      url: config.url,
      headers: withoutKey(headers),
      auth: config.auth && config.auth.username ? 'Basic' : authScheme(headers),
      bytes: body.length,
      calls: json.batch.map((call) => call.type),
      status,
    });
  };
  client.axiosInstance.interceptors.response.use(
    (response) => { record(response.config, response.status); return response; },
    (error) => {
      if (error && error.config) record(error.config, error.response ? error.response.status : null);
      return Promise.reject(error);
    });
  sendEveryCall(client);
  await client.flush();
  // Per-call callbacks run on setImmediate after the batch settles.
  await new Promise((resolve) => setImmediate(resolve));
}

const EXPECTED = ['page', 'identify', 'alias', 'track', 'screen', 'group'];

(library === 'segment' ? segment() : rudderstack())
  .catch((error) => errors.push(`thrown: ${error && (error.stack || error)}`))
  .then(() => {
    const missing = EXPECTED.filter((type) => !delivered.includes(type));
    const ok = errors.length === 0 && missing.length === 0;
    process.stdout.write(JSON.stringify({ library, ok, delivered, errors, requests }) + '\n');
    if (!ok) {
      console.error(`${library}: not every call delivered; missing: ${missing.join(', ') || 'none'}; `
                    + `errors: ${errors.join(' | ') || 'none'}`);
    }
    process.exit(ok ? 0 : 1);
  });
