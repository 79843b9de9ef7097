// The client of bench/upload/run.sh: one tus 1.0 upload of a file with npm tus-js-client 4.3.1,
// the same code for every server; times it from the creation request to the last PATCH's answer.
//
//   node client.mjs ENDPOINT=http://127.0.0.1:3997/files FILE=/path/to/100M.bin
//   node client.mjs ENDPOINT=http://127.0.0.1:3996/api/v1/uploads FILE=... TOKEN=... CASE_ID=...
//
// Every KEY=VALUE argument may also be given in the environment (arguments win):
//   ENDPOINT  the creation URL (required); a relative Location is resolved against it
//   FILE      the file to upload (required); read slice by slice from disk: each PATCH body is
//             an fs.ReadStream of its slice, nothing is held in memory
//   CHUNK     bytes per PATCH (5242880 = 5 MiB)
//   READ_KB   KiB per read of those streams (1024), given to tus-js-client through its
//             `fileReader` option; 0: tus-js-client's own fs.ReadStream source, which reads
//             64 KiB at a time and costs the client about twice the CPU per byte (the client
//             shares the machine with the server: its cost caps what any server can show)
//   TOKEN     sent as `Authorization: Bearer TOKEN` on every request (none when empty)
//   CASE_ID   Upload-Metadata caseId (left out when empty); filename and filetype are always sent
//   FILENAME  Upload-Metadata filename (the file's base name)
//   TIMEOUT   seconds the whole upload may take before it is aborted (600)
//   PROGRESS  1: one line on stderr per acknowledged PATCH, {"t":ms since start,"offset":bytes}
//
// One request at a time on one keep-alive connection, no retries (a failure is reported, not
// hidden), no resume fingerprint, no data in the creation request (creation, then PATCHes).
// After the upload (outside the timing) a HEAD reads the server's Upload-Offset.
//
// Stdout, one JSON line:
//   {"ok":true,"bytes":..,"seconds":..,"mbps":..,"patches":..,"chunk":..,"location":"..",
//    "lastOffset":<Upload-Offset of the last PATCH answer>,"headOffset":..,"headLength":..}
//   {"ok":false,"stage":"create|patch|head|timeout|...","status":<HTTP status or null>,
//    "body":"<first 500 characters of the answer>","message":".."}
// MB/s = bytes / 1048576 / seconds (MiB). Exits 0 when the upload completed and both offsets
// equal the file's size, 1 otherwise, 2 when the arguments are bad.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { performance } from "node:perf_hooks";
import tus from "tus-js-client"; // CommonJS: its module.exports

const args = { ...process.env };
for (const a of process.argv.slice(2)) {
  const i = a.indexOf("=");
  if (i > 0) args[a.slice(0, i)] = a.slice(i + 1);
}
const ENDPOINT = args.ENDPOINT ?? "";
const FILE = args.FILE ?? "";
const CHUNK = Number(args.CHUNK ?? 5 * 1024 * 1024);
const TOKEN = args.TOKEN ?? "";
const CASE_ID = args.CASE_ID ?? "";
const TIMEOUT = Number(args.TIMEOUT ?? 600);
const READ_KB = Number(args.READ_KB ?? 1024);
const PROGRESS = args.PROGRESS === "1";
if (!ENDPOINT || !FILE || !(CHUNK > 0) || !(TIMEOUT > 0) || !(READ_KB >= 0)) {
  process.stderr.write("client.mjs: needs ENDPOINT=... FILE=... (CHUNK > 0, TIMEOUT > 0, READ_KB >= 0)\n");
  process.exit(2);
}
const FILENAME = args.FILENAME ?? path.basename(FILE);
const size = fs.statSync(FILE).size;

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const fail = (o) => {
  out({ ok: false, status: null, body: "", ...o });
  process.exit(1);
};

// One connection, kept alive across the creation and every PATCH (and the HEAD).
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
const metadata = { filename: FILENAME, filetype: "application/octet-stream" };
if (CASE_ID) metadata.caseId = CASE_ID;

// The file as tus-js-client's sources give it (size, slice(start, end) -> {value, done}, close),
// each slice a read stream of READ_KB-KiB reads; tus-js-client clamps end to the size.
const fileReader = {
  async openFile() {
    return {
      size,
      async slice(start, end) {
        const value = fs.createReadStream(FILE, { start, end: end - 1, highWaterMark: READ_KB * 1024 });
        value.size = end - start; // the PATCH's Content-Length
        return { value, done: end >= size };
      },
      close() {},
    };
  },
};

let patches = 0;
let lastOffset = null;
let t0 = 0;
const result = await new Promise((resolve) => {
  const upload = new tus.Upload(fs.createReadStream(FILE), {
    endpoint: ENDPOINT,
    chunkSize: CHUNK,
    uploadSize: size,
    metadata,
    headers,
    retryDelays: [],
    storeFingerprintForResuming: false,
    removeFingerprintOnSuccess: false,
    uploadDataDuringCreation: false,
    parallelUploads: 1,
    httpStack: new tus.DefaultHttpStack({ agent }),
    ...(READ_KB > 0 ? { fileReader } : {}),
    onAfterResponse(req, res) {
      if (req.getMethod() === "PATCH" && res.getStatus() >= 200 && res.getStatus() < 300) {
        patches++;
        lastOffset = Number(res.getHeader("Upload-Offset"));
        if (PROGRESS) process.stderr.write(JSON.stringify({ t: +(performance.now() - t0).toFixed(1), offset: lastOffset }) + "\n");
      }
    },
    onSuccess() {
      resolve({ ok: true, seconds: (performance.now() - t0) / 1000, url: upload.url });
    },
    onError(err) {
      const res = err.originalResponse ?? null;
      const req = err.originalRequest ?? null;
      const method = req ? req.getMethod() : null;
      resolve({
        ok: false,
        stage: method === "POST" ? "create" : method === "PATCH" ? "patch" : method ? method.toLowerCase() : "client",
        status: res ? res.getStatus() : null,
        body: res ? String(res.getBody() ?? "").slice(0, 500) : "",
        message: String(err.message ?? err).split("\n")[0].slice(0, 300),
      });
    },
  });
  const timer = setTimeout(() => {
    upload.abort(false).catch(() => {});
    resolve({ ok: false, stage: "timeout", message: `the upload did not finish in ${TIMEOUT} s` });
  }, TIMEOUT * 1000);
  timer.unref();
  t0 = performance.now();
  upload.start();
});
if (!result.ok) fail(result);

// The server's view of the finished upload, outside the timing.
const head = await new Promise((resolve) => {
  const req = http.request(
    result.url,
    { method: "HEAD", agent, headers: { ...headers, "Tus-Resumable": "1.0.0" }, timeout: 30000 },
    (res) => {
      res.resume();
      res.on("end", () =>
        resolve({
          status: res.statusCode,
          offset: res.headers["upload-offset"] == null ? null : Number(res.headers["upload-offset"]),
          length: res.headers["upload-length"] == null ? null : Number(res.headers["upload-length"]),
        }),
      );
    },
  );
  req.on("timeout", () => req.destroy(new Error("HEAD timed out")));
  req.on("error", (e) => resolve({ status: null, error: e.message }));
  req.end();
});
agent.destroy();

const rec = {
  ok: lastOffset === size && head.offset === size,
  bytes: size,
  seconds: +result.seconds.toFixed(4),
  mbps: +(size / 1048576 / result.seconds).toFixed(1),
  patches,
  chunk: CHUNK,
  location: result.url,
  lastOffset,
  headStatus: head.status,
  headOffset: head.offset ?? null,
  headLength: head.length ?? null,
};
if (!rec.ok) {
  rec.stage = "offset";
  rec.message = `final offsets (last PATCH ${lastOffset}, HEAD ${head.status} ${head.offset ?? head.error}) are not the file's size ${size}`;
}
out(rec);
process.exit(rec.ok ? 0 : 1);
