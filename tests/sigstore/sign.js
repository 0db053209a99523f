#!/usr/bin/env node
// Test material made by Sigstore's own JavaScript tools, offline: real Sigstore bundles from
// @sigstore/sign against the CA, CT log and transparency log of @sigstore/mock (answered through nock,
// with every other network connection refused), the trusted root that verifies them, and
// cosign-style key signatures made with node:crypto.
//
//   node tests/sigstore/sign.js SPEC.json     (writes into spec.out; prints a JSON summary)
//
// SPEC: {
//   "out": "/dir",
//   "identity": "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1",  (the token's sub)
//   "issuer": "https://token.actions.githubusercontent.com",                               (the token's iss)
//   "bundles": [ {"name": "sig", "kind": "dsse", "subjects": [{"name": "reg/repo", "digest": "sha256:..."}],
//                 "predicateType": "https://sigstore.dev/cosign/sign/v1"},
//                {"name": "msg", "kind": "message", "file": "/path/of/the/signed/bytes"} ],
//   "keys": [ {"name": "p256", "type": "ec", "curve": "P-256", "payloads": ["/path/payload.json", ...],
//              "tlog": true, "dsse": [{"subjects": [...], "predicateType": "..."}]} ]   (type: ec | rsa | ed25519)
//   "cosignKeyless": [ {"name": "legacy", "payloads": ["/path/payload.json"]} ]
// }
// Output files: trusted_root.json, <bundle name>.sigstore.json, <key name>.pub.pem,
// <key name>.<n>.sig (base64 signature of payloads[n]), <key name>.<n>.rekor.json (with "tlog": the
// Rekor SET bundle cosign puts in its dev.sigstore.cosign/bundle annotation), <key name>.dsse<n>.sigstore.json;
// for cosignKeyless (cosign's legacy keyless tag scheme): <name>.<n>.sig, <name>.<n>.crt (the Fulcio
// certificate, PEM), <name>.<n>.rekor.json.
//
// Where @sigstore/mock differs from the real services, this script does what the real ones do, so
// that sigstore-python (which checks these details) verifies the result:
// - the real Rekor stores a dsse entry in canonical form (payloadHash, envelopeHash, signatures
//   whose verifier is the base64 of the certificate as a 64-column PEM); the mock logs the proposed
//   entry, so the Rekor handler below canonicalises it (and a hashedrekord's key PEM) before logging;
// - bundleToJSON leaves out proto3 zero values (an inclusion proof's logIndex 0, an empty hashes
//   list), which sigstore-python's models require: they are put back;
// - the mock Fulcio reads the token's sub and iss only in strict mode: it runs in strict mode, with
//   an unsigned token carrying them.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const nock = require('nock');
const { initializeCA, initializeCTLog, initializeTLog, fulcioHandler } = require('@sigstore/mock');
const { FulcioSigner, RekorWitness, DSSEBundleBuilder, MessageSignatureBundleBuilder } = require('@sigstore/sign');
const { bundleToJSON } = require('@sigstore/bundle');

const FULCIO_URL = 'https://fulcio.sigstore.dev';
const REKOR_URL = 'https://rekor.sigstore.dev';
const IN_TOTO = 'application/vnd.in-toto+json';
const BUNDLE_V03 = 'application/vnd.dev.sigstore.bundle.v0.3+json';

const sha256 = (data) => crypto.createHash('sha256').update(data).digest();

function pem64(der, label = 'CERTIFICATE') {
  const body = Buffer.from(der).toString('base64').match(/.{1,64}/g).join('\n');
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}

function pemToDER(pem) {
  return Buffer.from(pem.replace(/-----(BEGIN|END) [A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

// The entry the real Rekor would store for a proposed entry.
function canonicalEntry(proposed) {
  if (proposed.kind === 'dsse') {
    const { envelope, verifiers } = proposed.spec.proposedContent;
    const env = JSON.parse(envelope);
    return {
      apiVersion: '0.0.1',
      kind: 'dsse',
      spec: {
        envelopeHash: { algorithm: 'sha256', value: sha256(Buffer.from(envelope)).toString('hex') },
        payloadHash: { algorithm: 'sha256', value: sha256(Buffer.from(env.payload, 'base64')).toString('hex') },
        signatures: env.signatures.map((s) => ({
          signature: s.sig,
          verifier: Buffer.from(pem64(pemToDER(Buffer.from(verifiers[0], 'base64').toString()))).toString('base64'),
        })),
      },
    };
  }
  if (proposed.kind === 'hashedrekord') {
    const key = Buffer.from(proposed.spec.signature.publicKey.content, 'base64').toString();
    const label = key.includes('CERTIFICATE') ? 'CERTIFICATE' : 'PUBLIC KEY';
    const entry = JSON.parse(JSON.stringify(proposed));
    entry.spec.signature.publicKey.content = Buffer.from(pem64(pemToDER(key), label)).toString('base64');
    return entry;
  }
  return proposed;
}

function fixZeroValues(json) {
  for (const entry of json.verificationMaterial.tlogEntries || []) {
    entry.logIndex = entry.logIndex || '0';
    if (entry.inclusionProof) {
      entry.inclusionProof.logIndex = entry.inclusionProof.logIndex || '0';
      entry.inclusionProof.hashes = entry.inclusionProof.hashes || [];
    }
  }
  return json;
}

function unsignedJWT(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
}

function statement(subjects, predicateType) {
  return Buffer.from(JSON.stringify({
    _type: 'https://in-toto.io/Statement/v1',
    subject: subjects.map((s) => {
      const [alg, hex] = s.digest.split(':');
      return { name: s.name, digest: { [alg]: hex } };
    }),
    predicateType: predicateType || 'https://sigstore.dev/cosign/sign/v1',
    predicate: {},
  }));
}

function pae(type, payload) {
  return Buffer.concat([Buffer.from(`DSSEv1 ${Buffer.byteLength(type)} ${type} ${payload.length} `), payload]);
}

function generateKey(spec) {
  switch (spec.type) {
    case 'ec':
      return crypto.generateKeyPairSync('ec', { namedCurve: spec.curve || 'P-256' });
    case 'rsa':
      return crypto.generateKeyPairSync('rsa', { modulusLength: spec.bits || 2048 });
    case 'ed25519':
      return crypto.generateKeyPairSync('ed25519');
    default:
      throw new Error(`unknown key type ${spec.type}`);
  }
}

// cosign's choices: SHA-256 for P-256 and RSA (PKCS#1 v1.5), the curve's hash for P-384/P-521, pure Ed25519.
function keySign(spec, privateKey, data) {
  const hash = spec.type === 'ed25519' ? null
    : spec.type === 'ec' && spec.curve === 'P-384' ? 'sha384'
      : spec.type === 'ec' && spec.curve === 'P-521' ? 'sha512' : 'sha256';
  return crypto.sign(hash, data, privateKey);
}

// The hashedrekord entry cosign logs for a signature over `payload`, and the Rekor SET bundle it
// keeps in the dev.sigstore.cosign/bundle annotation of its tag-scheme layer.
async function logHashedRekord(tlog, payload, signature, keyPEM) {
  const entry = canonicalEntry({
    apiVersion: '0.0.1', kind: 'hashedrekord',
    spec: { data: { hash: { algorithm: 'sha256', value: sha256(payload).toString('hex') } },
      signature: { content: signature.toString('base64'), publicKey: { content: Buffer.from(keyPEM).toString('base64') } } },
  });
  const logged = Object.values(await tlog.log(entry))[0];
  return JSON.stringify({ SignedEntryTimestamp: logged.verification.signedEntryTimestamp,
    Payload: { body: logged.body, integratedTime: logged.integratedTime, logIndex: logged.logIndex, logID: logged.logID } });
}

async function main() {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  fs.mkdirSync(spec.out, { recursive: true });
  nock.disableNetConnect(); // nothing leaves this process

  const caKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const ctKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const logKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const ctlog = await initializeCTLog(ctKeys);
  const ca = await initializeCA(caKeys, ctlog);
  const tlog = await initializeTLog(REKOR_URL, logKeys);
  const fulcio = fulcioHandler(ca, { strict: true });

  nock(FULCIO_URL).persist().post(fulcio.path).reply(async (_uri, body) => {
    const r = await fulcio.fn(typeof body === 'string' ? body : JSON.stringify(body));
    return [r.statusCode, r.response, { 'Content-Type': r.contentType || 'text/plain' }];
  });
  nock(REKOR_URL).persist().post('/api/v1/log/entries').reply(async (_uri, body) => {
    const proposed = typeof body === 'string' ? JSON.parse(body) : body;
    const entry = await tlog.log(canonicalEntry(proposed));
    return [201, JSON.stringify(entry), { 'Content-Type': 'application/json' }];
  });

  const now = Math.floor(Date.now() / 1000);
  const token = unsignedJWT({ iss: spec.issuer, sub: spec.identity, aud: 'sigstore', iat: now, exp: now + 600 });
  const signer = new FulcioSigner({ identityProvider: { getToken: async () => token }, fulcioBaseURL: FULCIO_URL });
  const witnesses = [new RekorWitness({ rekorBaseURL: REKOR_URL, entryType: 'dsse' })];
  const summary = { bundles: {}, keys: {} };

  for (const b of spec.bundles || []) {
    let bundle;
    if (b.kind === 'dsse') {
      bundle = await new DSSEBundleBuilder({ signer, witnesses })
        .create({ data: statement(b.subjects, b.predicateType), type: IN_TOTO });
    } else if (b.kind === 'message') {
      bundle = await new MessageSignatureBundleBuilder({ signer, witnesses }).create({ data: fs.readFileSync(b.file) });
    } else {
      throw new Error(`unknown bundle kind ${b.kind}`);
    }
    const file = path.join(spec.out, `${b.name}.sigstore.json`);
    fs.writeFileSync(file, JSON.stringify(fixZeroValues(bundleToJSON(bundle))));
    summary.bundles[b.name] = file;
  }

  for (const k of spec.keys || []) {
    const { publicKey, privateKey } = generateKey(k);
    const pub = publicKey.export({ type: 'spki', format: 'pem' });
    fs.writeFileSync(path.join(spec.out, `${k.name}.pub.pem`), pub);
    const out = { publicKey: path.join(spec.out, `${k.name}.pub.pem`), signatures: [], dsse: [] };
    out.rekor = [];
    for (const [n, file] of (k.payloads || []).entries()) {
      const payload = fs.readFileSync(file);
      const signature = keySign(k, privateKey, payload);
      const sigFile = path.join(spec.out, `${k.name}.${n}.sig`);
      fs.writeFileSync(sigFile, signature.toString('base64'));
      out.signatures.push(sigFile);
      if (k.tlog) {
        const rekorFile = path.join(spec.out, `${k.name}.${n}.rekor.json`);
        fs.writeFileSync(rekorFile, await logHashedRekord(tlog, payload, signature, pub));
        out.rekor.push(rekorFile);
      }
    }
    (k.dsse || []).forEach((d, n) => {
      const payload = statement(d.subjects, d.predicateType);
      const sig = keySign(k, privateKey, pae(IN_TOTO, payload));
      const bundle = {
        mediaType: BUNDLE_V03,
        verificationMaterial: { publicKey: { hint: sha256(publicKey.export({ type: 'spki', format: 'der' })).toString('base64') },
          tlogEntries: [] },
        dsseEnvelope: { payload: payload.toString('base64'), payloadType: IN_TOTO, signatures: [{ sig: sig.toString('base64'), keyid: '' }] },
      };
      const file = path.join(spec.out, `${k.name}.dsse${n}.sigstore.json`);
      fs.writeFileSync(file, JSON.stringify(bundle));
      out.dsse.push(file);
    });
    summary.keys[k.name] = out;
  }

  summary.cosignKeyless = {};
  for (const c of spec.cosignKeyless || []) {
    const out = { signatures: [], certificates: [], rekor: [] };
    for (const [n, file] of (c.payloads || []).entries()) {
      const payload = fs.readFileSync(file);
      const signed = await signer.sign(payload); // a Fulcio certificate for a new key, and its signature
      const base = path.join(spec.out, `${c.name}.${n}`);
      fs.writeFileSync(`${base}.sig`, Buffer.from(signed.signature).toString('base64'));
      fs.writeFileSync(`${base}.crt`, signed.key.certificate);
      fs.writeFileSync(`${base}.rekor.json`, await logHashedRekord(tlog, payload, signed.signature, signed.key.certificate));
      out.signatures.push(`${base}.sig`);
      out.certificates.push(`${base}.crt`);
      out.rekor.push(`${base}.rekor.json`);
    }
    summary.cosignKeyless[c.name] = out;
  }

  // The trusted root for all of the above: the mock CA's root certificate, the log key, the CT key.
  const start = new Date((now - 86400) * 1000).toISOString();
  const logDER = logKeys.publicKey.export({ type: 'spki', format: 'der' });
  const ctDER = ctKeys.publicKey.export({ type: 'spki', format: 'der' });
  const root = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [{ baseUrl: REKOR_URL, hashAlgorithm: 'SHA2_256',
      publicKey: { rawBytes: logDER.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start } },
      logId: { keyId: sha256(logDER).toString('base64') } }],
    certificateAuthorities: [{ subject: { organization: 'sigstore.mock', commonName: 'sigstore' }, uri: FULCIO_URL,
      certChain: { certificates: [{ rawBytes: Buffer.from(ca.rootCertificate).toString('base64') }] },
      validFor: { start } }],
    ctlogs: [{ baseUrl: 'https://ctfe.sigstore.dev', hashAlgorithm: 'SHA2_256',
      publicKey: { rawBytes: ctDER.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start } },
      logId: { keyId: Buffer.from(ctlog.logID).toString('base64') } }],
    timestampAuthorities: [],
  };
  summary.trustedRoot = path.join(spec.out, 'trusted_root.json');
  fs.writeFileSync(summary.trustedRoot, JSON.stringify(root, null, 2));
  process.stdout.write(JSON.stringify(summary) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n${err && err.cause ? `cause: ${err.cause.stack || err.cause}\n` : ''}`);
  process.exit(1);
});
