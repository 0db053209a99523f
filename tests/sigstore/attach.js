#!/usr/bin/env node
// Attach a Sigstore bundle to an image with @sigstore/oci's attachArtifactToImage, as GitHub's
// attest actions do: an OCI referrer manifest (artifact type = the bundle's media type, subject = the
// image) plus, on a registry without the referrers API, the referrers tag schema index.
//
//   node tests/sigstore/attach.js SPEC.json    (prints the referrer's descriptor as JSON)
//
// SPEC: {"registry": "127.0.0.1:5443", "repository": "acme/app", "digest": "sha256:...",
//        "bundle": "/path/x.sigstore.json", "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
//        "username": "...", "password": "...", "name": "upstream.airlock.test", "annotations": {...}}
//
// @sigstore/oci speaks plain HTTP to "localhost" and "127.0.0.1" and HTTPS to any other name. The
// stand-in's registries serve TLS on 127.0.0.1, so the image is named with `name` (any name), which
// this process resolves to the registry's address, and whose certificate it checks as the
// certificate of that address (the stand-in's CA comes from NODE_EXTRA_CA_CERTS).
// package.json lists promise-retry because @sigstore/oci 0.6.0 requires it without declaring it.
'use strict';

const dns = require('node:dns');
const fs = require('node:fs');
const tls = require('node:tls');

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const [address, port] = spec.registry.split(':');
const name = spec.name || 'registry.airlock.test';

const lookup = dns.lookup;
dns.lookup = (hostname, options, callback) => {
  if (typeof options === 'function') [options, callback] = [{}, options];
  if (hostname !== name) return lookup(hostname, options, callback);
  if (options && options.all) return process.nextTick(callback, null, [{ address, family: 4 }]);
  return process.nextTick(callback, null, address, 4);
};
const checkServerIdentity = tls.checkServerIdentity;
tls.checkServerIdentity = (hostname, cert) => checkServerIdentity(hostname === name ? address : hostname, cert);

const { attachArtifactToImage } = require('@sigstore/oci');

attachArtifactToImage({
  imageName: `${name}:${port}/${spec.repository}`,
  imageDigest: spec.digest,
  artifact: fs.readFileSync(spec.bundle),
  mediaType: spec.mediaType || 'application/vnd.dev.sigstore.bundle.v0.3+json',
  annotations: spec.annotations || {},
  credentials: { username: spec.username, password: spec.password },
}).then((descriptor) => {
  process.stdout.write(JSON.stringify(descriptor) + '\n');
}).catch((err) => {
  let cause = err;
  const lines = [];
  while (cause) {
    lines.push(String(cause.stack || cause));
    cause = cause.cause;
  }
  process.stderr.write(lines.join('\ncaused by: ') + '\n');
  process.exit(1);
});
