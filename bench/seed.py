#!/usr/bin/env python3
"""Seeds a running LexiFlow for the benchmark through its public API.

Registers a firm, opens N cases (one POST each, on one keep-alive connection) and writes:
  <state>/token   an access token of the firm's admin (valid for the access-token lifetime)
  <state>/ids     the ids of the cases, one per line

Usage: seed.py BASE_URL STATE_DIR N
"""
import http.client
import json
import sys
import uuid
from urllib.parse import urlparse

base, state, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def call(method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    res = conn.getresponse()
    data = res.read()
    if res.status >= 300:
        sys.exit(f"{method} {path} -> {res.status}: {data[:300]!r}")
    return json.loads(data) if data else None


email = f"bench-{uuid.uuid4().hex[:8]}@bench.test"
reg = call("POST", "/api/v1/auth/register", {
    "firmName": "Bench LLP", "email": email, "password": "benchmark-password-123",
    "firstName": "Bench", "lastName": "Admin",
})
token = reg["data"]["accessToken"]
ids = []
types = ["civil", "criminal", "family", "corporate", "tax"]
for i in range(n):
    c = call("POST", "/api/v1/cases", {
        "caseNumber": f"BENCH-{i:06d}", "title": f"Bench matter {i} v. Example Corp.",
        "type": types[i % len(types)], "court": "S.D.N.Y.", "clientName": f"Client {i}",
        "description": "<p>Seeded for the <b>benchmark</b>.</p>",
    }, token)
    ids.append(c["data"]["id"])
with open(f"{state}/token", "w") as f:
    f.write(token)
with open(f"{state}/firm", "w") as f:
    f.write(reg["data"]["user"]["firmId"])
with open(f"{state}/ids", "w") as f:
    f.write("\n".join(ids) + "\n")
print(f"seeded {n} cases as {email}")
