//! Real tus clients against a served LexiFlow: tus-js-client (Node, `tests/uploads/tus.mjs`)
//! and tuspy (Python, `tests/uploads/tus.py`) each upload 20 MB in 5 MB chunks, stop part-way
//! (the "browser" closes), and a second process resumes from the URL the client stored.
//! The document made from the upload must download byte for byte. Without Node's
//! `tests/uploads/node_modules` or a Python with tuspy the tests are skipped with a NOTE
//! (`LEXIFLOW_REQUIRE_NODE=1` / `LEXIFLOW_REQUIRE_PYTHON=1` fail instead).

use std::{path::PathBuf, process::Command, sync::atomic::AtomicBool};

use serde_json::{Value, json};
use sha2::Digest;

use crate::support::{Backend, TestApp};

crate::on_both_backends!(tus_js_client_resumes_after_a_restart, tuspy_resumes_after_a_restart_with_checksums);

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/uploads")
}

fn python() -> String {
    std::env::var("LEXIFLOW_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn node_available() -> bool {
    static NOTED: AtomicBool = AtomicBool::new(false);
    let ok = dir().join("node_modules/tus-js-client").is_dir()
        && Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    crate::support::tool_available(
        &NOTED,
        ok,
        "node with tests/uploads/node_modules",
        "LEXIFLOW_REQUIRE_NODE",
        "the tus_clients:: tus-js-client tests",
        "run `npm ci` in tests/uploads",
    )
}

fn python_available() -> bool {
    static NOTED: AtomicBool = AtomicBool::new(false);
    let ok = Command::new(python()).args(["-c", "import tusclient"]).output().is_ok_and(|o| o.status.success());
    crate::support::tool_available(
        &NOTED,
        ok,
        &format!("{} with tuspy", python()),
        "LEXIFLOW_REQUIRE_PYTHON",
        "the tus_clients:: tuspy tests",
        "pip install -r tests/uploads/requirements.txt, or set LEXIFLOW_TEST_PYTHON",
    )
}

/// Runs a driver to its end; returns its JSON line.
async fn run(program: &str, script: &str, args: &[String]) -> Value {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(dir().join(script)).args(args).kill_on_drop(true);
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|_| {
        panic!("{script}: no JSON result; stdout {stdout:?}, stderr {}", String::from_utf8_lossy(&out.stderr))
    })
}

/// 20 MB that sniff as a PDF, written to a file.
fn twenty_mb(dir: &std::path::Path) -> (PathBuf, Vec<u8>) {
    let mut bytes = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut x: u32 = 0x1234_5678;
    while bytes.len() < 20_000_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(20_000_000);
    let path = dir.join("exhibit.pdf");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

async fn resumes(b: Backend, program: &str, script: &str, extra: &[&str]) {
    let t = TestApp::new(b).await;
    let base = t.serve().await;
    let s = t.register("Tus").await;
    let case = t.case(&s, "TUS-1").await;
    let tmp = tempfile::tempdir().unwrap();
    let (file, bytes) = twenty_mb(tmp.path());
    let store = tmp.path().join("urls.json");
    let mut args: Vec<String> = vec![
        "--endpoint".into(),
        format!("{base}/api/v1/uploads"),
        "--token".into(),
        s.token.clone(),
        "--file".into(),
        file.display().to_string(),
        "--chunk-size".into(),
        "5000000".into(),
        "--metadata".into(),
        "filename=exhibit 7 (Ürkunde).pdf".into(),
        "--metadata".into(),
        "filetype=application/pdf".into(),
        "--metadata".into(),
        format!("caseId={case}"),
        "--store".into(),
        store.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut first = args.clone();
    first.extend(["--abort-after".into(), "7000000".into()]);
    let stopped = run(program, script, &first).await;
    assert_eq!(stopped["completed"], false, "{stopped}");
    let at = stopped["offset"].as_u64().unwrap();
    assert!((7_000_000..20_000_000).contains(&at), "{stopped}");
    // The "browser" restarts: a new process finds the stored URL and resumes.
    let mut second = args.clone();
    second.push("--resume".into());
    let done = run(program, script, &second).await;
    assert_eq!(done["completed"], true, "{done}");
    assert_eq!(done["resumed"], true, "{done}");
    assert_eq!(done["url"], stopped["url"], "the same upload was resumed");
    let upload = done["url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let r = t
        .post(
            &format!("/api/v1/cases/{case}/documents"),
            &s.token,
            json!({"uploadId": upload, "title": "Exhibit 7", "type": "exhibit"}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.data()["latest"]["filename"], "exhibit 7 (Ürkunde).pdf");
    let id = r.data()["id"].as_str().unwrap().to_owned();
    let (status, _, body) =
        t.raw(http::Method::GET, &format!("/api/v1/documents/{id}/download"), Some(&s.token), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), bytes.len());
    assert_eq!(sha2::Sha256::digest(&body), sha2::Sha256::digest(&bytes), "identical bytes");
}

async fn tus_js_client_resumes_after_a_restart(b: Backend) {
    if node_available() {
        resumes(b, "node", "tus.mjs", &[]).await;
    }
}

async fn tuspy_resumes_after_a_restart_with_checksums(b: Backend) {
    if python_available() {
        resumes(b, &python(), "tus.py", &["--checksum", "sha1"]).await;
    }
}
