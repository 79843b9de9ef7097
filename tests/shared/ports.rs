//! A free TCP port for a process a test starts (a LexiFlow binary, a `redis-server`).
//!
//! Not one from `bind("127.0.0.1:0")`: that is an ephemeral port, and between the test dropping
//! its probe listener and the child listening on it, the kernel may hand the same port to an
//! outgoing connection (the other instances' pools opening at the same moment), and the child
//! fails with "address in use" (seen in CI). Ports below the kernel's ephemeral range are never
//! handed out that way; one is picked at random there and checked free.

use std::{collections::HashSet, net::TcpListener, sync::Mutex};

static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

pub fn free_port() -> u16 {
    // The low end of `ip_local_port_range` (32768 by default).
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    // Below the range, or above it when the range starts low (then 61000 and up).
    let (low, high) = if ephemeral > 11_000 { (10_000u16, ephemeral) } else { (61_000, 65_535) };
    for _ in 0..1_000 {
        let r = uuid::Uuid::new_v4().as_u128();
        let port = low + (r % u128::from(high - low)) as u16;
        // Never the same port twice in one test binary (two children about to listen).
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && GIVEN.lock().unwrap().get_or_insert_with(HashSet::new).insert(port)
        {
            return port;
        }
    }
    // Everything there is taken: fall back to the kernel's choice.
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
