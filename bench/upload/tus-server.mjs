// The comparison server of bench/upload/run.sh: npm @tus/server 2.4.5 with @tus/file-store
// 2.1.1, as their README's standalone example, on Node's http server.
//
//   node tus-server.mjs PORT=3997 DIR=/path/to/empty/dir
//
// Every KEY=VALUE argument may also be given in the environment (arguments win):
//   PORT  the port on 127.0.0.1 (3997)
//   DIR   where FileStore keeps the uploads: <id> (the bytes) and <id>.json (its metadata)
//         (required)
// Routes: the tus endpoint at /files (creation, HEAD, PATCH, DELETE), GET /health (200 "ok").
// maxSize 2 GiB, as LexiFlow's MAX_FILE_SIZE in the benchmark. Nothing else is configured:
// the default in-memory locker, no expiration, no hooks. @tus/file-store writes each PATCH
// body with a write stream at its offset, with no fsync and no checksum.
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const args = { ...process.env };
for (const a of process.argv.slice(2)) {
  const i = a.indexOf("=");
  if (i > 0) args[a.slice(0, i)] = a.slice(i + 1);
}
const PORT = Number(args.PORT ?? 3997);
const DIR = args.DIR ?? "";
if (!DIR || !(PORT > 0)) {
  process.stderr.write("tus-server.mjs: needs DIR=... (and PORT > 0)\n");
  process.exit(2);
}

const tus = new Server({
  path: "/files",
  datastore: new FileStore({ directory: DIR }),
  maxSize: 2 * 1024 * 1024 * 1024,
});
const server = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "Content-Type": "text/plain" }).end("ok");
    return;
  }
  tus.handle(req, res);
});
server.listen(PORT, "127.0.0.1", () => process.stderr.write(`tus-server: @tus/server on http://127.0.0.1:${PORT}/files, store ${DIR}\n`));
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => process.exit(0));
