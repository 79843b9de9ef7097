#!/usr/bin/env node
// Command-line tus 1.0 upload driver built on the real tus-js-client (Node build).
// LexiFlow's integration tests spawn it; see README.md in this folder for the CLI contract.
//
// stdout: exactly one JSON line at the end
//   {"url": ..., "offset": N, "completed": bool, "resumed": bool}   exit 0
//   {"error": "...", "status": <HTTP status or null>}               exit 1 (upload failed),
//                                                                   exit 2 (bad arguments),
//                                                                   exit 4 (--resume found nothing)
// stderr: diagnostics only.
import fs from 'node:fs';
import process from 'node:process';
import { Upload, FileUrlStorage } from 'tus-js-client';

function emit(obj, code) {
  process.stdout.write(`${JSON.stringify(obj)}\n`, () => process.exit(code));
}

function fail(message, status = null, code = 1) {
  emit({ error: String(message), status: status ?? null }, code);
}

function parseArgs(argv) {
  const opts = {
    endpoint: null,
    token: null,
    file: null,
    chunkSize: 5000000,
    metadata: {},
    store: null,
    abortAfter: null,
    resume: false,
    checksum: null,
    creationWithUpload: false,
  };
  const needValue = (i, flag) => {
    if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
    return argv[i + 1];
  };
  const toInt = (v, flag, min) => {
    if (!/^\d+$/.test(v) || Number(v) < min) throw new Error(`${flag} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--endpoint': opts.endpoint = needValue(i, a); i++; break;
      case '--token': opts.token = needValue(i, a); i++; break;
      case '--file': opts.file = needValue(i, a); i++; break;
      case '--chunk-size': opts.chunkSize = toInt(needValue(i, a), a, 1); i++; break;
      case '--metadata': {
        const kv = needValue(i, a); i++;
        const eq = kv.indexOf('=');
        if (eq <= 0) throw new Error(`--metadata expects key=value, got ${JSON.stringify(kv)}`);
        opts.metadata[kv.slice(0, eq)] = kv.slice(eq + 1);
        break;
      }
      case '--store': opts.store = needValue(i, a); i++; break;
      case '--abort-after': opts.abortAfter = toInt(needValue(i, a), a, 0); i++; break;
      case '--resume': opts.resume = true; break;
      case '--checksum': opts.checksum = needValue(i, a); i++; break;
      // Not part of the shared contract (tuspy cannot do it): send the first chunk in the POST.
      case '--creation-with-upload': opts.creationWithUpload = true; break;
      default: throw new Error(`unknown argument ${JSON.stringify(a)}`);
    }
  }
  if (!opts.endpoint) throw new Error('--endpoint is required');
  if (!opts.file) throw new Error('--file is required');
  if (opts.resume && !opts.store) throw new Error('--resume needs --store');
  if (opts.checksum != null) {
    // tus-js-client 4.x has no implementation of the tus checksum extension.
    throw new Error('--checksum is not supported by tus-js-client (no checksum extension in 4.x)');
  }
  return opts;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    fail(e.message, null, 2);
    return;
  }

  let size;
  try {
    size = fs.statSync(opts.file).size;
  } catch (e) {
    fail(`cannot read --file: ${e.message}`, null, 2);
    return;
  }

  let posted = false; // a POST (new upload) was sent by this process
  let previous = null; // the stored upload we resume from, if any
  let finished = false;
  let upload;

  const finish = (offset, completed) => {
    if (finished) return;
    finished = true;
    const url = upload.url;
    emit({ url, offset, completed, resumed: previous != null && !posted && url === previous.uploadUrl }, 0);
  };

  const options = {
    endpoint: opts.endpoint,
    chunkSize: opts.chunkSize,
    metadata: opts.metadata,
    headers: opts.token != null ? { Authorization: `Bearer ${opts.token}` } : {},
    retryDelays: null, // no automatic retries: the tests must see errors as they happen
    uploadDataDuringCreation: opts.creationWithUpload,
    storeFingerprintForResuming: opts.store != null,
    removeFingerprintOnSuccess: false,
    onBeforeRequest(req) {
      const method = req.getMethod();
      process.stderr.write(`tus.mjs: ${method} ${req.getURL()}\n`);
      if (method === 'POST') posted = true;
      if (method === 'PATCH' && opts.abortAfter != null) {
        // Upload-Offset of the next PATCH is what the server has acknowledged so far
        // (from the previous PATCH's or the HEAD's response).
        const acked = Number(req.getHeader('Upload-Offset'));
        if (acked >= opts.abortAfter) {
          upload.abort();
          finish(acked, false);
          // Throwing here stops this PATCH before it is sent; tus-js-client stays silent
          // about it because the upload has been aborted.
          throw new Error('aborted by --abort-after');
        }
      }
    },
    onAfterResponse(req, res) {
      const status = res.getStatus();
      const newOffset = res.getHeader('Upload-Offset');
      process.stderr.write(`tus.mjs:   -> ${status} Upload-Offset=${newOffset ?? '-'} Location=${res.getHeader('Location') ?? '-'}\n`);
      // tus-js-client re-sends the rest forever when a 2xx PATCH does not move the offset
      // forward; a test must see that as a failure, not hang.
      if (req.getMethod() === 'PATCH' && status >= 200 && status < 300 && newOffset != null) {
        const sent = Number(req.getHeader('Upload-Offset'));
        if (Number(newOffset) <= sent && sent < size) {
          upload.abort();
          if (!finished) {
            finished = true;
            fail(`server acknowledged PATCH at offset ${sent} with Upload-Offset ${newOffset} (no progress)`, status, 1);
          }
          throw new Error('no progress');
        }
      }
    },
    onSuccess() {
      finish(size, true);
    },
    onError(err) {
      if (finished) return;
      finished = true;
      const status = err && err.originalResponse ? err.originalResponse.getStatus() : null;
      fail(err && err.message ? err.message : String(err), status, 1);
    },
  };
  if (opts.store != null) options.urlStorage = new FileUrlStorage(opts.store);

  upload = new Upload(fs.createReadStream(opts.file), options);

  if (opts.resume) {
    let found;
    try {
      found = await upload.findPreviousUploads();
    } catch (e) {
      fail(`cannot read --store: ${e.message}`, null, 1);
      return;
    }
    if (!found || found.length === 0) {
      fail(`no previous upload of ${opts.file} for ${opts.endpoint} in ${opts.store}`, null, 4);
      return;
    }
    // FileUrlStorage keeps entries in insertion order: resume the most recent one.
    previous = found[found.length - 1];
    process.stderr.write(`tus.mjs: resuming ${previous.uploadUrl} (stored ${previous.creationTime})\n`);
    upload.resumeFromPreviousUpload(previous);
  }

  upload.start();
}

main().catch((e) => fail(e && e.message ? e.message : String(e), null, 1));
