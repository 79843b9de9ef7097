// The client's ceiling in bench/upload/run.sh: the least a tus 1.0 server can do, on Node's
// http server. It accepts a creation (201, Location), counts and discards each PATCH's bytes
// (204 with the new Upload-Offset) and answers HEAD; no checks, no storage. An upload to it
// measures what client.mjs itself can send on this machine beside a server that does nothing.
//
//   node sink.mjs PORT=3999
//
// Routes: POST /files, HEAD|PATCH /files/<id>, GET /health. Built-ins only.
import http from "node:http";

const args = { ...process.env };
for (const a of process.argv.slice(2)) {
  const i = a.indexOf("=");
  if (i > 0) args[a.slice(0, i)] = a.slice(i + 1);
}
const PORT = Number(args.PORT ?? 3999);
const uploads = new Map();
let next = 0;
const TUS = { "Tus-Resumable": "1.0.0" };

http
  .createServer((req, res) => {
    const done = (code, headers = {}) => req.resume().on("end", () => res.writeHead(code, { ...TUS, ...headers }).end());
    if (req.method === "GET" && req.url === "/health") return done(200);
    if (req.method === "POST" && req.url === "/files") {
      const id = String(++next);
      uploads.set(id, { length: Number(req.headers["upload-length"]), offset: 0 });
      return done(201, { Location: `/files/${id}` });
    }
    const u = uploads.get(req.url.replace(/^\/files\//, ""));
    if (!u) return done(404);
    if (req.method === "HEAD") return done(200, { "Upload-Offset": u.offset, "Upload-Length": u.length, "Cache-Control": "no-store" });
    if (req.method === "PATCH") {
      if (Number(req.headers["upload-offset"]) !== u.offset) return done(409);
      req.on("data", (d) => (u.offset += d.length));
      return req.on("end", () => res.writeHead(204, { ...TUS, "Upload-Offset": u.offset }).end());
    }
    if (req.method === "DELETE") {
      uploads.delete(req.url.replace(/^\/files\//, ""));
      return done(204);
    }
    done(405);
  })
  .listen(PORT, "127.0.0.1", () => process.stderr.write(`sink: http://127.0.0.1:${PORT}/files\n`));
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => process.exit(0));
