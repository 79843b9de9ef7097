#!/usr/bin/env python3
"""Summarises a collapsed-stack profile (inferno-collapse-perf output) of LexiFlow.

Prints the hottest frames by self time and, for the parts of the request path named below,
the share of all samples whose stack passes through them (inclusive time).

Usage: profile_top.py FILE.folded
"""
import collections
import re
import sys

PARTS = [  # (label, regex on a frame)
    ("kernel: network and scheduling (syscalls, epoll, switches)", r"^(entry_SYSCALL|do_syscall_64)"),
    ("hyper: HTTP/1 parsing and writing", r"hyper::proto::h1"),
    ("middleware: security headers", r"lexiflow::http::security::headers"),
    ("middleware: request context (correlation id, access log, metrics)", r"lexiflow::http::context::request_context"),
    ("middleware: global rate limit", r"lexiflow::ratelimit::global_limit"),
    ("middleware: request deadline", r"lexiflow::http::security::deadline"),
    ("middleware: CORS", r"tower_http::cors"),
    ("middleware: compression (decides, passes through)", r"tower_http::compression"),
    ("auth: require_auth (JWT check, session lookup)", r"lexiflow::auth::require_auth"),
    ("auth: JWT verify", r"jsonwebtoken::"),
    ("handler: cases::http", r"lexiflow::cases::http::"),
    ("access check: visible_case_cached", r"lexiflow::cases::access::visible_case"),
    ("cache (moka)", r"moka::"),
    ("database driver: sqlx", r"sqlx_(postgres|sqlite|core)::"),
    ("ORM: sea_orm", r"sea_orm::"),
    ("SQLite engine", r"^sqlite3"),
    ("audit append", r"lexiflow::audit::"),
    ("domain events / outbox", r"lexiflow::events::"),
    ("transaction helper: db::tx", r"lexiflow::db::tx::"),
    ("JSON: serde_json", r"serde_json::"),
    ("logging: tracing-subscriber fmt", r"tracing_subscriber::fmt"),
    ("metrics: metrics crate / exporter", r"metrics(_exporter_prometheus|_util)?::"),
    ("allocator: mimalloc", r"^_?mi_"),
    ("UUID generation", r"uuid::"),
    ("chrono formatting", r"chrono::format"),
]

# Frames that nest along one request, outermost first; a sample is charged to the last one on
# its stack, so each figure is a part's own cost (kernel time inside it included).
NESTED = [
    ("hyper connection (parse, write, socket I/O)", r"hyper::proto::h1|hyper::server"),
    ("security headers", r"lexiflow::http::security::headers"),
    ("request context, access log, metrics", r"lexiflow::http::context"),
    ("compression layer", r"tower_http::compression"),
    ("CORS layer", r"tower_http::cors"),
    ("global rate limit", r"lexiflow::ratelimit"),
    ("request deadline", r"lexiflow::http::security::deadline"),
    ("routing", r"axum::routing"),
    ("auth (JWT, session)", r"lexiflow::auth"),
    ("handler and envelope (JSON)", r"lexiflow::(cases|http::envelope|http::extract)"),
    ("access check", r"lexiflow::cases::access"),
    ("write path (transaction, audit, events)", r"lexiflow::(db::tx|app::App::write|audit|events)"),
    ("ORM query building and decoding (sea_orm, sea_query)", r"sea_orm::|sea_query::"),
    ("database driver (sqlx, socket I/O to the database)", r"sqlx_"),
    ("logging (tracing-subscriber)", r"tracing_subscriber"),
    ("serde_json", r"serde_json::"),
]


def main(path):
    total = 0
    self_t = collections.Counter()
    incl = collections.Counter()
    excl = collections.Counter()
    nest = [(label, re.compile(rx)) for label, rx in NESTED]
    pats = [(label, re.compile(rx)) for label, rx in PARTS]
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        n = int(n)
        total += n
        frames = stack.split(";")
        self_t[frames[-1]] += n
        for label, rx in pats:
            if any(rx.search(f) for f in frames):
                incl[label] += n
        inner = "outside the request path (runtime, other tasks, kernel without a request frame)"
        for f in frames:
            for label, rx in nest:
                if rx.search(f):
                    inner = label
        excl[inner] += n
    print(f"# {path}: {total} samples")
    print("## self time, top 25")
    for f, n in self_t.most_common(25):
        print(f"{100 * n / total:6.2f}%  {f[:150]}")
    print("## exclusive time: samples charged to the innermost part of the request path on their stack")
    for label, n in sorted(excl.items(), key=lambda kv: -kv[1]):
        print(f"{100 * n / total:6.2f}%  {label}")
    print("## inclusive time of the request path's parts")
    for label, _ in PARTS:
        print(f"{100 * incl[label] / total:6.2f}%  {label}")


if __name__ == "__main__":
    main(sys.argv[1])
