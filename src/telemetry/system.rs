//! `/metrics/system`: the machine as this process sees it — memory, CPU, load, uptime, and
//! the free space where the data (and upload) directories live. Read from `/proc` and
//! `statvfs` on Linux; fields that cannot be read elsewhere are null.

use std::path::Path;

use serde_json::{Value, json};

/// Bytes available to this (unprivileged) process on the filesystem holding `path`, and the
/// filesystem's total size.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    // The directory may not exist yet (uploads before the first upload): ask its nearest
    // existing ancestor, which is on the same filesystem unless a mount intervenes.
    let probe = path.ancestors().find(|p| !p.as_os_str().is_empty() && p.exists()).unwrap_or(Path::new("."));
    let st = nix::sys::statvfs::statvfs(probe).ok()?;
    let frsize = st.fragment_size() as u64;
    Some((st.blocks_available() as u64 * frsize, st.blocks() as u64 * frsize))
}

/// Resident set size of this process, in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(kib_field)
}

fn kib_field(v: &str) -> Option<u64> {
    v.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
}

fn meminfo() -> Value {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else { return Value::Null };
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).and_then(kib_field);
    json!({
        "totalBytes": field("MemTotal:"),
        "availableBytes": field("MemAvailable:"),
        "freeBytes": field("MemFree:"),
    })
}

fn loadavg() -> Value {
    let Ok(text) = std::fs::read_to_string("/proc/loadavg") else { return Value::Null };
    let v: Vec<f64> = text.split_whitespace().take(3).filter_map(|s| s.parse().ok()).collect();
    if v.len() == 3 { json!({ "1m": v[0], "5m": v[1], "15m": v[2] }) } else { Value::Null }
}

fn uptime_seconds() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()
}

/// CPU seconds (user + system) this process has used.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The whole `/metrics/system` document.
pub fn snapshot(data_dir: &Path, process_uptime: std::time::Duration) -> Value {
    let disk = disk_space(data_dir);
    json!({
        "memory": meminfo(),
        "process": {
            "residentBytes": resident_bytes(),
            "cpuSeconds": process_cpu_seconds(),
            "uptimeSeconds": process_uptime.as_secs_f64(),
            "pid": std::process::id(),
        },
        "cpu": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "loadAverage": loadavg(),
        },
        "systemUptimeSeconds": uptime_seconds(),
        "disk": {
            "path": data_dir.display().to_string(),
            "availableBytes": disk.map(|d| d.0),
            "totalBytes": disk.map(|d| d.1),
        },
    })
}
