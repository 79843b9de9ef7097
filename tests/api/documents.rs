//! Documents and tus uploads: the protocol's rules (offsets, checksums, sizes, locks), what a
//! finished upload becomes (sniffed type, dedup, refusals), versions, legal hold, sealed and
//! restricted documents, downloads (Range, ETag, Content-Disposition, audit), expiry, and
//! clamd scanning (when `LEXIFLOW_TEST_CLAMD` names a clamd; `LEXIFLOW_REQUIRE_CLAMD=1` fails
//! instead of skipping).

use std::{sync::atomic::AtomicBool, time::Duration};

use axum::body::Body;
use base64::Engine;
use futures_util::future::join_all;
use http::{Method, Request};
use serde_json::{Value, json};
use sha2::Digest;

use crate::support::{Backend, Res, Session, TestApp};

crate::on_both_backends!(
    tus_upload_becomes_a_document_that_downloads_byte_for_byte,
    bad_patches_get_their_error_and_change_nothing,
    a_second_patch_while_one_is_writing_is_refused,
    a_patch_that_lost_its_lease_cannot_touch_the_stored_file,
    metadata_that_names_a_path_or_a_foreign_case_is_refused,
    the_same_bytes_are_stored_once_and_versions_are_gapless,
    executables_and_decompression_bombs_are_refused_on_completion,
    sealed_restricted_and_held_documents,
    expired_uploads_and_unreferenced_files_are_removed,
    eicar_is_quarantined_and_a_clean_file_is_served,
    with_clamd_down_the_scan_policy_decides,
    images_get_a_thumbnail_once_processed,
    patches_are_not_held_to_the_global_rate_limit,
    an_upload_started_on_one_instance_continues_on_another,
    a_completion_that_failed_is_finished_when_the_client_comes_back,
);

const MB: usize = 1_000_000;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn sha256_hex(b: &[u8]) -> String {
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes that sniff as a PDF.
fn pdf(n: usize, seed: u8) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    v.extend((0..n.saturating_sub(v.len())).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v
}

/// A tus request (with `Tus-Resumable`), `body` as given.
async fn tus(t: &TestApp, method: Method, path: &str, token: &str, headers: &[(&str, String)], body: Vec<u8>) -> Res {
    let mut b = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
    b = b.header("tus-resumable", "1.0.0");
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    t.send(b.body(Body::from(body)).unwrap()).await
}

/// Creates an upload for `case`; returns its path.
async fn create(t: &TestApp, s: &Session, case: &str, name: &str, len: usize) -> String {
    let meta = format!("filename {},filetype {},caseId {}", b64(name), b64("application/pdf"), b64(case));
    let r = tus(
        t,
        Method::POST,
        "/api/v1/uploads",
        &s.token,
        &[("upload-length", len.to_string()), ("upload-metadata", meta)],
        vec![],
    )
    .await;
    r.expect(201);
    assert!(r.header("upload-expires").is_some_and(|e| e.ends_with(" GMT")), "{:?}", r.headers);
    r.header("location").unwrap().to_owned()
}

async fn patch(t: &TestApp, s: &Session, path: &str, offset: usize, bytes: &[u8]) -> Res {
    tus(
        t,
        Method::PATCH,
        path,
        &s.token,
        &[("upload-offset", offset.to_string()), ("content-type", "application/offset+octet-stream".into())],
        bytes.to_vec(),
    )
    .await
}

async fn offset(t: &TestApp, s: &Session, path: &str) -> u64 {
    let r = tus(t, Method::HEAD, path, &s.token, &[], vec![]).await;
    r.expect(200);
    r.header("upload-offset").unwrap().parse().unwrap()
}

/// Uploads `bytes` in `chunk`-sized PATCHes; returns the upload's id.
async fn upload(t: &TestApp, s: &Session, case: &str, name: &str, bytes: &[u8], chunk: usize) -> String {
    let path = create(t, s, case, name, bytes.len()).await;
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + chunk).min(bytes.len());
        let r = patch(t, s, &path, at, &bytes[at..end]).await;
        r.expect(204);
        assert_eq!(r.header("upload-offset"), Some(end.to_string().as_str()));
        at = end;
    }
    path.rsplit('/').next().unwrap().to_owned()
}

async fn file_document(t: &TestApp, s: &Session, case: &str, upload: &str, extra: Value) -> Value {
    let mut body = json!({"uploadId": upload, "title": "Motion to dismiss", "type": "motion", "tags": ["draft"]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let r = t.post(&format!("/api/v1/cases/{case}/documents"), &s.token, body).await;
    r.expect(201);
    r.data().clone()
}

async fn tus_upload_becomes_a_document_that_downloads_byte_for_byte(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Docs").await;
    let case = t.case(&s, "DOC-1").await;
    let r = t.call(Method::OPTIONS, "/api/v1/uploads", Some(&s.token), None).await;
    r.expect(204);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    assert!(r.header("tus-extension").unwrap().contains("creation-with-upload"));
    assert!(r.header("tus-checksum-algorithm").unwrap().contains("sha1"));
    assert_eq!(r.header("tus-max-size"), Some((100 * 1024 * 1024).to_string().as_str()));

    let bytes = pdf(3 * MB + 17, 1);
    let path = create(&t, &s, &case, "Müller v. Smith.pdf", bytes.len()).await;
    let head = tus(&t, Method::HEAD, &path, &s.token, &[], vec![]).await;
    head.expect(200);
    assert_eq!(head.header("upload-offset"), Some("0"));
    assert_eq!(head.header("upload-length"), Some(bytes.len().to_string().as_str()));
    assert_eq!(head.header("cache-control"), Some("no-store"));
    // A checksum that matches is taken.
    let first = &bytes[..MB];
    let sum = base64::engine::general_purpose::STANDARD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, first));
    let r = tus(
        &t,
        Method::PATCH,
        &path,
        &s.token,
        &[
            ("upload-offset", "0".into()),
            ("content-type", "application/offset+octet-stream".into()),
            ("upload-checksum", format!("sha1 {sum}")),
        ],
        first.to_vec(),
    )
    .await;
    r.expect(204);
    patch(&t, &s, &path, MB, &bytes[MB..]).await.expect(204);
    let id = path.rsplit('/').next().unwrap();
    let status = t.get(&format!("/api/v1/uploads/{id}"), &s.token).await;
    status.expect(200);
    assert_eq!(status.data()["completed"], true);
    assert_eq!(status.data()["mime"], "application/pdf");
    assert_eq!(status.data()["sha256"], sha256_hex(&bytes));

    let doc = file_document(&t, &s, &case, id, json!({})).await;
    assert_eq!(doc["currentVersion"], 1);
    assert_eq!(doc["latest"]["mime"], "application/pdf");
    assert_eq!(doc["latest"]["scanStatus"], "not_scanned");
    assert_eq!(doc["latest"]["filename"], "Müller v. Smith.pdf");
    let doc_id = doc["id"].as_str().unwrap();
    // The upload was used up.
    t.post(
        &format!("/api/v1/cases/{case}/documents"),
        &s.token,
        json!({"uploadId": id, "title": "again", "type": "motion"}),
    )
    .await
    .expect(400);

    let dl = format!("/api/v1/documents/{doc_id}/download");
    let (status, headers, body) = t.raw(Method::GET, &dl, Some(&s.token), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&bytes), "the bytes come back as they went");
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["accept-ranges"], "bytes");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&bytes)));
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"M_ller v. Smith.pdf\"; filename*=UTF-8''M%C3%BCller%20v.%20Smith.pdf"
    );
    let (status, headers, body) = t.raw(Method::GET, &dl, Some(&s.token), &[("range", "bytes=100-199")]).await;
    assert_eq!(status, 206);
    assert_eq!(&body[..], &bytes[100..200]);
    assert_eq!(headers["content-range"], format!("bytes 100-199/{}", bytes.len()));
    let (status, ..) = t.raw(Method::GET, &dl, Some(&s.token), &[("range", "bytes=99999999-")]).await;
    assert_eq!(status, 416);
    let (status, ..) = t.raw(Method::GET, &dl, Some(&s.token), &[("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    // Every download is on the record.
    let audit = t.get("/api/v1/audit?action=document.download&limit=100", &s.token).await;
    audit.expect(200);
    assert!(audit.data().as_array().unwrap().len() >= 3, "{}", audit.body);

    // creation-with-upload: the first bytes ride on the POST.
    let small = pdf(1000, 2);
    let meta = format!("filename {},caseId {}", b64("small.pdf"), b64(&case));
    let r = tus(
        &t,
        Method::POST,
        "/api/v1/uploads",
        &s.token,
        &[
            ("upload-length", small.len().to_string()),
            ("upload-metadata", meta),
            ("content-type", "application/offset+octet-stream".into()),
        ],
        small.clone(),
    )
    .await;
    r.expect(201);
    assert_eq!(r.header("upload-offset"), Some("1000"));
    // Termination.
    let path = create(&t, &s, &case, "gone.pdf", 10).await;
    tus(&t, Method::DELETE, &path, &s.token, &[], vec![]).await.expect(204);
    tus(&t, Method::HEAD, &path, &s.token, &[], vec![]).await.expect(404);
}

async fn bad_patches_get_their_error_and_change_nothing(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Bad").await;
    let case = t.case(&s, "BAD-1").await;
    let bytes = pdf(2 * MB, 3);
    let path = create(&t, &s, &case, "a.pdf", bytes.len()).await;
    patch(&t, &s, &path, 0, &bytes[..MB]).await.expect(204);
    // Wrong offset.
    let r = patch(&t, &s, &path, 5, &bytes[5..MB]).await;
    r.expect(409);
    assert_eq!(r.code(), "CONFLICT");
    assert_eq!(offset(&t, &s, &path).await, MB as u64);
    // Checksum mismatch: 460, nothing stored.
    let wrong = base64::engine::general_purpose::STANDARD.encode([7u8; 20]);
    let r = tus(
        &t,
        Method::PATCH,
        &path,
        &s.token,
        &[
            ("upload-offset", MB.to_string()),
            ("content-type", "application/offset+octet-stream".into()),
            ("upload-checksum", format!("sha1 {wrong}")),
        ],
        bytes[MB..].to_vec(),
    )
    .await;
    assert_eq!(r.status.as_u16(), 460);
    assert_eq!(r.code(), "CHECKSUM_MISMATCH");
    assert_eq!(offset(&t, &s, &path).await, MB as u64);
    // Past Upload-Length: 413, nothing stored.
    let mut over = bytes[MB..].to_vec();
    over.extend_from_slice(b"one too many");
    let r = patch(&t, &s, &path, MB, &over).await;
    r.expect(413);
    assert_eq!(offset(&t, &s, &path).await, MB as u64);
    // Wrong content type, missing version, unknown checksum algorithm, bad offset.
    let r = tus(
        &t,
        Method::PATCH,
        &path,
        &s.token,
        &[("upload-offset", MB.to_string()), ("content-type", "application/json".into())],
        b"{}".to_vec(),
    )
    .await;
    r.expect(415);
    let mut req =
        Request::builder().method(Method::PATCH).uri(&path).header("authorization", format!("Bearer {}", s.token));
    req = req.header("upload-offset", "0").header("content-type", "application/offset+octet-stream");
    let r = t.send(req.body(Body::from(vec![1u8])).unwrap()).await;
    r.expect(412);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    let r = tus(
        &t,
        Method::PATCH,
        &path,
        &s.token,
        &[
            ("upload-offset", MB.to_string()),
            ("content-type", "application/offset+octet-stream".into()),
            ("upload-checksum", "md5 AAAA".into()),
        ],
        vec![1],
    )
    .await;
    r.expect(400);
    let r = tus(
        &t,
        Method::PATCH,
        &path,
        &s.token,
        &[("upload-offset", "-1".into()), ("content-type", "application/offset+octet-stream".into())],
        vec![1],
    )
    .await;
    r.expect(400);
    assert_eq!(offset(&t, &s, &path).await, MB as u64);
    // And the upload still finishes correctly.
    patch(&t, &s, &path, MB, &bytes[MB..]).await.expect(204);
    let id = path.rsplit('/').next().unwrap();
    assert_eq!(t.get(&format!("/api/v1/uploads/{id}"), &s.token).await.data()["sha256"], sha256_hex(&bytes));
    // Unauthenticated: 401.
    let r = t.call(Method::HEAD, &path, None, None).await;
    r.expect(401);
}

async fn a_second_patch_while_one_is_writing_is_refused(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Lock").await;
    let case = t.case(&s, "L-1").await;
    let bytes = pdf(MB, 4);
    let path = create(&t, &s, &case, "a.pdf", bytes.len()).await;
    // The first PATCH's body arrives slowly, through a channel.
    let (tx, first) = slow_patch(&t, &s, &path, bytes::Bytes::copy_from_slice(&bytes[..1000])).await;
    let id = path.rsplit('/').next().unwrap().to_owned();
    let second = patch(&t, &s, &path, 0, &bytes).await;
    second.expect(423);
    assert_eq!(second.code(), "RESOURCE_LOCKED");
    let del = tus(&t, Method::DELETE, &path, &s.token, &[], vec![]).await;
    del.expect(423);
    tx.send(Ok(bytes::Bytes::copy_from_slice(&bytes[1000..]))).await.unwrap();
    drop(tx);
    assert_eq!(first.await.unwrap(), 204);
    assert_eq!(t.get(&format!("/api/v1/uploads/{id}"), &s.token).await.data()["sha256"], sha256_hex(&bytes));
}

/// A PATCH whose lease was lost while it still held bytes (its process stalled past the
/// lease, simulated here by clearing the lease under it): the upload's next holder is not let
/// in while it still writes, and its late bytes never reach the stored file.
async fn a_patch_that_lost_its_lease_cannot_touch_the_stored_file(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Stale").await;
    let case = t.case(&s, "S-1").await;
    let bytes = pdf(MB, 5);
    let path = create(&t, &s, &case, "a.pdf", bytes.len()).await;
    let id = path.rsplit('/').next().unwrap().to_owned();
    // Bytes that are not the file's.
    let (tx, stale) = slow_patch(&t, &s, &path, bytes::Bytes::from(vec![b'X'; 1000])).await;
    // It has opened its writer by now (before it reads its body). Then its lease lapses
    // under it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.sql_exec("UPDATE uploads SET lock_token = NULL, locked_until = NULL").await;
    let mut ended = Some(tx);
    let mut done = false;
    for _ in 0..100 {
        let r = patch(&t, &s, &path, 0, &bytes).await;
        if r.status == 204 {
            done = true;
            break;
        }
        // Local files: refused while the stale PATCH still holds the file.
        r.expect(423);
        // It ends (its client hangs up) and finds its lease gone.
        if let Some(tx) = ended.take() {
            tx.send(Err(std::io::Error::other("hang up"))).await.unwrap();
            drop(tx);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "the upload was finished by its new holder");
    if let Some(tx) = ended.take() {
        // Object storage: the new holder went first; the stale PATCH ends now.
        tx.send(Ok(bytes::Bytes::from(vec![b'X'; 1000]))).await.unwrap();
        drop(tx);
    }
    tokio::time::timeout(Duration::from_secs(10), stale).await.expect("the stale PATCH ends").unwrap();
    let doc = file_document(&t, &s, &case, &id, json!({})).await;
    let dl = format!("/api/v1/documents/{}/download", doc["id"].as_str().unwrap());
    let (status, _, body) = t.raw(Method::GET, &dl, Some(&s.token), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), bytes.len());
    assert_eq!(sha256_hex(&body), sha256_hex(&bytes), "the stored file is the upload's, byte for byte");
    assert_eq!(doc["latest"]["sha256"], sha256_hex(&bytes));
}

/// A PATCH at offset 0 whose body arrives through the channel returned, `first` sent, started
/// on its own task (its status at the end); returns once it holds the upload's lease.
async fn slow_patch(
    t: &TestApp,
    s: &Session,
    path: &str,
    first: bytes::Bytes,
) -> (tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>, tokio::task::JoinHandle<http::StatusCode>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(path)
        .header("authorization", format!("Bearer {}", s.token))
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(Body::from_stream(tokio_stream_of(rx)))
        .unwrap();
    let router = t.router.clone();
    let task = tokio::spawn(async move { tower::ServiceExt::oneshot(router, req).await.unwrap().status() });
    tx.send(Ok(first)).await.unwrap();
    for _ in 0..100 {
        let rows = t.sql("SELECT COUNT(*) AS n FROM uploads WHERE lock_token IS NOT NULL").await;
        if rows[0].try_get::<i64>("", "n").unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (tx, task)
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn metadata_that_names_a_path_or_a_foreign_case_is_refused(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Meta").await;
    let other = t.register("Other").await;
    let case = t.case(&s, "M-1").await;
    let foreign = t.case(&other, "F-1").await;
    let post = |meta: String, len: &str| {
        let (t, token, len) = (&t, s.token.clone(), len.to_owned());
        async move {
            tus(
                t,
                Method::POST,
                "/api/v1/uploads",
                &token,
                &[("upload-length", len), ("upload-metadata", meta)],
                vec![],
            )
            .await
        }
    };
    for name in ["../../etc/passwd", "..", "a/b.pdf", "..\\..\\boot.ini", "x\u{1}y.pdf"] {
        let r = post(format!("filename {},caseId {}", b64(name), b64(&case)), "10").await;
        r.expect(400);
        assert_eq!(r.code(), "VALIDATION_FAILED", "{name:?}");
    }
    post(format!("filename {}", b64("a.pdf")), "10").await.expect(400);
    post(format!("filename {},caseId {}", b64("a.pdf"), b64("not-a-uuid")), "10").await.expect(400);
    post("filename !!!".into(), "10").await.expect(400);
    // Another firm's case does not exist for this caller.
    post(format!("filename {},caseId {}", b64("a.pdf"), b64(&foreign)), "10").await.expect(404);
    // Larger than MAX_FILE_SIZE.
    let r = post(format!("filename {},caseId {}", b64("a.pdf"), b64(&case)), &(200 * 1024 * 1024).to_string()).await;
    r.expect(413);
    // Another user's (and another firm's) upload is not there for them.
    let path = create(&t, &s, &case, "mine.pdf", 10).await;
    tus(&t, Method::HEAD, &path, &other.token, &[], vec![]).await.expect(404);
    patch(&t, &other, &path, 0, b"0123456789").await.expect(404);
    let colleague = t.user(&s, "partner").await;
    tus(&t, Method::HEAD, &path, &colleague.token, &[], vec![]).await.expect(404);
    // A client of the case may read it but not upload to it.
    let client = t.user(&s, "client").await;
    t.post(&format!("/api/v1/cases/{case}/team"), &s.token, json!({"userId": client.user_id, "role": "client"}))
        .await
        .expect(201);
    let meta = format!("filename {},caseId {}", b64("a.pdf"), b64(&case));
    tus(
        &t,
        Method::POST,
        "/api/v1/uploads",
        &client.token,
        &[("upload-length", "10".into()), ("upload-metadata", meta)],
        vec![],
    )
    .await
    .expect(403);
}

async fn the_same_bytes_are_stored_once_and_versions_are_gapless(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Dedup").await;
    let case = t.case(&s, "DD-1").await;
    let bytes = pdf(200_000, 5);
    let first = upload(&t, &s, &case, "one.pdf", &bytes, 64 * 1024).await;
    let second = upload(&t, &s, &case, "two.pdf", &bytes, 100_000).await;
    let rows = t.sql("SELECT COUNT(*) AS n, MAX(ref_count) AS refs FROM blobs").await;
    assert_eq!(rows[0].try_get::<i64>("", "n").unwrap(), 1, "the same bytes are stored once");
    assert_eq!(rows[0].try_get::<i64>("", "refs").unwrap(), 2);
    let blobs = t.app.storage.list("blobs").await.unwrap();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert!(t.app.storage.list("staging").await.unwrap().is_empty());
    let doc = file_document(&t, &s, &case, &first, json!({})).await;
    let doc_id = doc["id"].as_str().unwrap().to_owned();
    // Twelve more versions posted at once, each from its own upload.
    let mut ups = vec![second];
    for i in 0..11 {
        ups.push(upload(&t, &s, &case, &format!("v{i}.pdf"), &pdf(5_000, i as u8 + 10), 5_000).await);
    }
    let posts = ups.iter().map(|u| {
        let (t, s, doc_id) = (&t, &s, &doc_id);
        async move {
            t.post(
                &format!("/api/v1/documents/{doc_id}/versions"),
                &s.token,
                json!({"uploadId": u, "changeNote": "edit"}),
            )
            .await
            .expect(201);
        }
    });
    join_all(posts).await;
    let versions = t.get(&format!("/api/v1/documents/{doc_id}/versions"), &s.token).await;
    versions.expect(200);
    let mut numbers: Vec<i64> =
        versions.data().as_array().unwrap().iter().map(|v| v["number"].as_i64().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=13).collect::<Vec<_>>(), "gapless, unique");
    let doc = t.get(&format!("/api/v1/documents/{doc_id}"), &s.token).await;
    assert_eq!(doc.data()["currentVersion"], 13);
    // The dedup'd copy's version (its number depends on which post won) downloads its bytes.
    let same: Vec<i64> = versions
        .data()
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["sha256"] == sha256_hex(&bytes))
        .map(|v| v["number"].as_i64().unwrap())
        .collect();
    assert_eq!(same.len(), 2, "version 1 and the copy carry the same content");
    let n = same.iter().max().unwrap();
    let (status, _, body) =
        t.raw(Method::GET, &format!("/api/v1/documents/{doc_id}/download?version={n}"), Some(&s.token), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&bytes));
    let rows = t.sql("SELECT ref_count FROM blobs WHERE size = 200000").await;
    assert_eq!(rows[0].try_get::<i64>("", "ref_count").unwrap(), 2, "the versions took over the uploads' references");
    // Another firm's identical file is its own blob.
    let other = t.register("Elsewhere").await;
    let other_case = t.case(&other, "E-1").await;
    upload(&t, &other, &other_case, "same.pdf", &bytes, 200_000).await;
    let rows = t.sql("SELECT COUNT(*) AS n FROM blobs WHERE size = 200000").await;
    assert_eq!(rows[0].try_get::<i64>("", "n").unwrap(), 2);
}

/// Every key the test's store holds.
async fn stored(t: &TestApp) -> Vec<String> {
    let mut all = Vec::new();
    for prefix in ["staging", "blobs", "quarantine", "thumbs"] {
        all.extend(t.app.storage.list(prefix).await.unwrap());
    }
    all
}

async fn executables_and_decompression_bombs_are_refused_on_completion(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Refuse").await;
    let case = t.case(&s, "R-1").await;
    // A Windows executable named like a PDF.
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".to_vec();
    exe.extend(vec![0u8; 5000]);
    let path = create(&t, &s, &case, "invoice.pdf", exe.len()).await;
    let r = patch(&t, &s, &path, 0, &exe).await;
    r.expect(415);
    assert_eq!(r.code(), "UNSUPPORTED_MEDIA_TYPE");
    tus(&t, Method::HEAD, &path, &s.token, &[], vec![]).await.expect(404);
    // A PNG whose header claims 100,000 × 100,000 pixels.
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(b"\x08\x02\x00\x00\x00\x00\x00\x00\x00");
    png.extend(vec![0u8; 1000]);
    let path = create(&t, &s, &case, "photo.png", png.len()).await;
    let r = patch(&t, &s, &path, 0, &png).await;
    r.expect(415);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("100000×100000"), "{}", r.body);
    let rows = t.sql("SELECT COUNT(*) AS n FROM blobs").await;
    assert_eq!(rows[0].try_get::<i64>("", "n").unwrap(), 0);
    assert!(stored(&t).await.is_empty(), "nothing kept: {:?}", stored(&t).await);
    // Plain text and an e-mail are taken, whatever they are called.
    let id = upload(&t, &s, &case, "notes.pdf", "Meeting notes: call opposing counsel.\n".as_bytes(), 100).await;
    assert_eq!(t.get(&format!("/api/v1/uploads/{id}"), &s.token).await.data()["mime"], "text/plain");
    let mail = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Settlement\r\n\r\nOffer attached.\r\n";
    let id = upload(&t, &s, &case, "mail.eml", mail, 1000).await;
    assert_eq!(t.get(&format!("/api/v1/uploads/{id}"), &s.token).await.data()["mime"], "message/rfc822");
}

async fn sealed_restricted_and_held_documents(b: Backend) {
    let t = TestApp::new(b).await;
    let admin = t.register("Hold").await;
    let attorney = t.user(&admin, "attorney").await;
    let client = t.user(&admin, "client").await;
    let case = t.case(&admin, "H-1").await;
    for (u, role) in [(&attorney, "lead_attorney"), (&client, "client")] {
        t.post(&format!("/api/v1/cases/{case}/team"), &admin.token, json!({"userId": u.user_id, "role": role}))
            .await
            .expect(201);
    }
    let up = upload(&t, &admin, &case, "sealed.pdf", &pdf(1000, 7), 1000).await;
    let sealed = file_document(&t, &admin, &case, &up, json!({"sealed": true})).await;
    let up = upload(&t, &admin, &case, "restricted.pdf", &pdf(1000, 8), 1000).await;
    let restricted = file_document(&t, &admin, &case, &up, json!({"restricted": true})).await;
    let up = upload(&t, &attorney, &case, "open.pdf", &pdf(1000, 9), 1000).await;
    let open = file_document(&t, &attorney, &case, &up, json!({})).await;
    // An attorney without a sealed grant may not file sealed documents.
    let up = upload(&t, &attorney, &case, "x.pdf", &pdf(1000, 10), 1000).await;
    t.post(
        &format!("/api/v1/cases/{case}/documents"),
        &attorney.token,
        json!({"uploadId": up, "title": "x", "type": "memo", "sealed": true}),
    )
    .await
    .expect(403);
    let list = |s: Session| {
        let (t, case) = (&t, case.clone());
        async move {
            let r = t.get(&format!("/api/v1/cases/{case}/documents"), &s.token).await;
            r.expect(200);
            (r.body["meta"]["pagination"]["total"].as_u64().unwrap(), r.data().as_array().unwrap().len())
        }
    };
    assert_eq!(list(admin.clone()).await, (3, 3));
    assert_eq!(list(attorney.clone()).await, (2, 2), "sealed is absent, not counted");
    assert_eq!(list(client.clone()).await, (1, 1), "sealed and restricted are absent for clients");
    for (doc, who, visible) in [
        (&sealed, &attorney, false),
        (&sealed, &client, false),
        (&restricted, &client, false),
        (&restricted, &attorney, true),
        (&open, &client, true),
    ] {
        let id = doc["id"].as_str().unwrap();
        let r = t.get(&format!("/api/v1/documents/{id}"), &who.token).await;
        r.expect(if visible { 200 } else { 404 });
        let (status, ..) = t.raw(Method::GET, &format!("/api/v1/documents/{id}/download"), Some(&who.token), &[]).await;
        assert_eq!(status, if visible { 200 } else { 404 });
    }
    // Nor is their history in the case's history: who filed what, under which title.
    let history = |who: crate::support::Session| {
        let t = &t;
        let case = case.clone();
        async move {
            let r = t.get(&format!("/api/v1/cases/{case}/history?limit=100"), &who.token).await;
            r.expect(200);
            r.data()
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["entityType"] == "document")
                .map(|e| e["entityId"].as_str().unwrap().to_owned())
                .collect::<std::collections::BTreeSet<String>>()
        }
    };
    let id = |d: &Value| d["id"].as_str().unwrap().to_owned();
    let all: std::collections::BTreeSet<String> = [id(&sealed), id(&restricted), id(&open)].into();
    assert_eq!(history(admin.clone()).await, all);
    assert_eq!(history(attorney.clone()).await, [id(&restricted), id(&open)].into());
    assert_eq!(history(client.clone()).await, [id(&open)].into());
    // Another firm sees nothing.
    let stranger = t.register("Stranger").await;
    t.get(&format!("/api/v1/documents/{}", open["id"].as_str().unwrap()), &stranger.token).await.expect(404);
    // A client may read but not change.
    let open_id = open["id"].as_str().unwrap();
    t.patch(&format!("/api/v1/documents/{open_id}"), &client.token, json!({"title": "mine"})).await.expect(403);
    // Legal hold: only admins and partners place it; it blocks deletion.
    t.patch(&format!("/api/v1/documents/{open_id}"), &attorney.token, json!({"legalHold": true})).await.expect(403);
    let held =
        t.patch(&format!("/api/v1/documents/{open_id}"), &admin.token, json!({"legalHold": true, "version": 1})).await;
    held.expect(200);
    assert_eq!(held.data()["legalHold"], true);
    t.patch(&format!("/api/v1/documents/{open_id}"), &admin.token, json!({"title": "stale", "version": 1}))
        .await
        .expect(412);
    let r = t.delete(&format!("/api/v1/documents/{open_id}"), &attorney.token).await;
    r.expect(409);
    t.get(&format!("/api/v1/documents/{open_id}"), &attorney.token).await.expect(200);
    t.patch(&format!("/api/v1/documents/{open_id}"), &admin.token, json!({"legalHold": false})).await.expect(200);
    t.delete(&format!("/api/v1/documents/{open_id}"), &attorney.token).await.expect(204);
    t.get(&format!("/api/v1/documents/{open_id}"), &attorney.token).await.expect(404);
    let audit = t.get("/api/v1/audit?entityType=document&limit=100", &admin.token).await;
    audit.expect(200);
    let actions: Vec<&str> = audit.data().as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["document.create", "document.legal_hold", "document.delete"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

async fn expired_uploads_and_unreferenced_files_are_removed(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Expire").await;
    let case = t.case(&s, "X-1").await;
    let bytes = pdf(10_000, 11);
    let unfinished = create(&t, &s, &case, "half.pdf", bytes.len()).await;
    patch(&t, &s, &unfinished, 0, &bytes[..5_000]).await.expect(204);
    let finished = upload(&t, &s, &case, "whole.pdf", &bytes, 10_000).await;
    let kept = upload(&t, &s, &case, "kept.pdf", &pdf(3_000, 12), 3_000).await;
    file_document(&t, &s, &case, &kept, json!({})).await;
    assert_eq!(t.app.storage.list("staging").await.unwrap().len(), 1);
    assert_eq!(t.app.storage.list("blobs").await.unwrap().len(), 2);
    t.sql_exec("UPDATE uploads SET expires_at = created_at").await;
    tus(&t, Method::HEAD, &unfinished, &s.token, &[], vec![]).await.expect(404);
    t.get(&format!("/api/v1/uploads/{finished}"), &s.token).await.expect(404);
    let storage = t.app.storage.clone();
    let (uploads, blobs) = lexiflow::uploads::expire_with(&t.app.db, &storage).await.unwrap();
    assert_eq!((uploads, blobs), (2, 1));
    assert!(t.app.storage.list("staging").await.unwrap().is_empty());
    assert_eq!(t.app.storage.list("blobs").await.unwrap().len(), 1, "the document's file stays");
    // Idempotent.
    assert_eq!(lexiflow::uploads::expire_with(&t.app.db, &storage).await.unwrap(), (0, 0));

    // An upload discarded from a stale read (a termination or the expiry job that read it just
    // before it was filed) drops no reference it no longer holds: the version keeps its file.
    use sea_orm::EntityTrait;
    let raced = upload(&t, &s, &case, "raced.pdf", &pdf(4_000, 13), 4_000).await;
    let stale = lexiflow::uploads::model::Entity::find_by_id(uuid::Uuid::parse_str(&raced).unwrap())
        .one(&t.app.db)
        .await
        .unwrap()
        .unwrap();
    let doc = file_document(&t, &s, &case, &raced, json!({})).await;
    lexiflow::uploads::discard_with(&t.app.db, &storage, &stale).await.unwrap();
    let counts = t.sql("SELECT ref_count FROM blobs ORDER BY ref_count").await;
    let counts: Vec<i64> = counts.iter().map(|r| r.try_get("", "ref_count").unwrap()).collect();
    assert_eq!(counts, [1, 1], "each filed version holds its blob once");
    lexiflow::uploads::expire_with(&t.app.db, &storage).await.unwrap();
    let dl = format!("/api/v1/documents/{}/download", doc["id"].as_str().unwrap());
    let (status, ..) = t.raw(Method::GET, &dl, Some(&s.token), &[]).await;
    assert_eq!(status, 200, "the filed version's file is still there");
}

/// The clamd the scanning tests use, if any.
fn clamd() -> Option<String> {
    static NOTED: AtomicBool = AtomicBool::new(false);
    let addr = std::env::var("LEXIFLOW_TEST_CLAMD").ok().filter(|a| !a.is_empty());
    let ok = addr.as_deref().is_some_and(|a| std::net::TcpStream::connect(a).is_ok());
    crate::support::tool_available(
        &NOTED,
        ok,
        "clamd (LEXIFLOW_TEST_CLAMD)",
        "LEXIFLOW_REQUIRE_CLAMD",
        "the documents:: scanning tests",
        "run tests/services/start.sh and set LEXIFLOW_TEST_CLAMD=127.0.0.1:3310",
    )
    .then(|| addr.unwrap_or_default())
}

fn eicar() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode("WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo=")
        .unwrap()
}

/// Runs the processing job of every blob still pending (or without a thumbnail), as the
/// worker would.
async fn process_pending(t: &TestApp, attempt: u32, max: u32) -> Vec<bool> {
    let rows = t.sql("SELECT id FROM blobs WHERE scan_status = 'pending' OR thumbnail_key IS NULL").await;
    let p = lexiflow::documents::process::Processor {
        db: t.app.db.clone(),
        storage: t.app.storage.clone(),
        files: t.app.config.files.clone(),
    };
    let mut out = Vec::new();
    for r in rows {
        let id: uuid::Uuid = r.try_get("", "id").unwrap();
        out.push(lexiflow::documents::process::run(p.clone(), json!({"blobId": id}), attempt, max).await.is_ok());
    }
    out
}

async fn eicar_is_quarantined_and_a_clean_file_is_served(b: Backend) {
    let Some(addr) = clamd() else { return };
    let t = TestApp::with(b, |c| {
        c.files.clamd_addr = Some(addr);
        c.files.scan_required = true;
    })
    .await;
    let s = t.register("Scan").await;
    let case = t.case(&s, "V-1").await;
    let bad = upload(&t, &s, &case, "harmless.txt", &eicar(), 1000).await;
    let bad = file_document(&t, &s, &case, &bad, json!({})).await;
    let good = upload(&t, &s, &case, "brief.pdf", &pdf(300_000, 13), 300_000).await;
    let good = file_document(&t, &s, &case, &good, json!({})).await;
    assert_eq!(bad["latest"]["scanStatus"], "pending");
    // Pending and SCAN_REQUIRED: not served yet.
    let (status, ..) = t
        .raw(Method::GET, &format!("/api/v1/documents/{}/download", good["id"].as_str().unwrap()), Some(&s.token), &[])
        .await;
    assert_eq!(status, 409);
    assert_eq!(process_pending(&t, 1, 8).await, vec![true, true]);
    let bad_id = bad["id"].as_str().unwrap();
    let doc = t.get(&format!("/api/v1/documents/{bad_id}"), &s.token).await;
    assert_eq!(doc.data()["latest"]["scanStatus"], "infected");
    let r = t.get(&format!("/api/v1/documents/{bad_id}/download"), &s.token).await;
    r.expect(403);
    assert_eq!(r.code(), "FILE_QUARANTINED");
    let files = stored(&t).await;
    assert!(files.iter().any(|f| f.starts_with("quarantine/")), "{files:?}");
    assert_eq!(
        files.iter().filter(|f| f.starts_with("blobs/")).count(),
        1,
        "only the clean file is servable: {files:?}"
    );
    let good_id = good["id"].as_str().unwrap();
    assert_eq!(t.get(&format!("/api/v1/documents/{good_id}"), &s.token).await.data()["latest"]["scanStatus"], "clean");
    let (status, ..) = t.raw(Method::GET, &format!("/api/v1/documents/{good_id}/download"), Some(&s.token), &[]).await;
    assert_eq!(status, 200);
    let audit = t.get("/api/v1/audit?action=document.quarantined&limit=10", &s.token).await;
    assert_eq!(audit.data().as_array().unwrap().len(), 1, "{}", audit.body);
    let events = t.sql("SELECT COUNT(*) AS n FROM domain_events WHERE event_type = 'document.processed'").await;
    assert_eq!(events[0].try_get::<i64>("", "n").unwrap(), 2);
    // The verdict is recorded before the file is moved: a job that stopped in between (here:
    // the file put back where uploads leave it) moves it when it runs again.
    let row = &t.sql("SELECT firm_id, sha256, storage_key FROM blobs WHERE scan_status = 'infected'").await[0];
    let (firm, sha): (uuid::Uuid, String) = (row.try_get("", "firm_id").unwrap(), row.try_get("", "sha256").unwrap());
    let quarantined: String = row.try_get("", "storage_key").unwrap();
    let servable = lexiflow::storage::Storage::blob_key(firm, &sha);
    t.app.storage.rename(&quarantined, &servable).await.unwrap();
    assert!(stored(&t).await.contains(&servable));
    process_pending(&t, 1, 8).await;
    let files = stored(&t).await;
    assert!(!files.contains(&servable) && files.contains(&quarantined), "{files:?}");

    // The same infected bytes again: the known verdict stands, nothing new is servable.
    let again = upload(&t, &s, &case, "again.txt", &eicar(), 1000).await;
    let again = file_document(&t, &s, &case, &again, json!({})).await;
    assert_eq!(again["latest"]["scanStatus"], "infected");
    t.get(&format!("/api/v1/documents/{}/download", again["id"].as_str().unwrap()), &s.token).await.expect(403);
}

async fn with_clamd_down_the_scan_policy_decides(b: Backend) {
    // Nothing listens on port 9 of loopback.
    let t = TestApp::with(b, |c| {
        c.files.clamd_addr = Some("127.0.0.1:9".into());
        c.files.scan_required = true;
        c.files.clamd_timeout = Duration::from_secs(2);
    })
    .await;
    let s = t.register("Down").await;
    let case = t.case(&s, "D-1").await;
    let up = upload(&t, &s, &case, "brief.pdf", &pdf(2000, 14), 2000).await;
    let doc = file_document(&t, &s, &case, &up, json!({})).await;
    let id = doc["id"].as_str().unwrap();
    // Not the last attempt: the job fails, to be retried; the file stays pending.
    assert_eq!(process_pending(&t, 1, 8).await, vec![false]);
    assert_eq!(t.get(&format!("/api/v1/documents/{id}"), &s.token).await.data()["latest"]["scanStatus"], "pending");
    // The last attempt records the error; with SCAN_REQUIRED the file is not served.
    assert_eq!(process_pending(&t, 8, 8).await, vec![true]);
    assert_eq!(t.get(&format!("/api/v1/documents/{id}"), &s.token).await.data()["latest"]["scanStatus"], "error");
    let r = t.get(&format!("/api/v1/documents/{id}/download"), &s.token).await;
    r.expect(409);
    assert_eq!(r.code(), "FILE_NOT_SCANNED");
}

async fn images_get_a_thumbnail_once_processed(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Thumb").await;
    let case = t.case(&s, "T-1").await;
    let img = image::RgbImage::from_fn(900, 300, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 40]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let up = upload(&t, &s, &case, "scene.png", &png, 100_000).await;
    let doc = file_document(&t, &s, &case, &up, json!({"type": "evidence"})).await;
    let id = doc["id"].as_str().unwrap();
    assert_eq!(doc["latest"]["mime"], "image/png");
    t.get(&format!("/api/v1/documents/{id}/thumbnail"), &s.token).await.expect(404);
    assert_eq!(process_pending(&t, 1, 8).await, vec![true]);
    let doc = t.get(&format!("/api/v1/documents/{id}"), &s.token).await;
    assert_eq!(doc.data()["latest"]["hasThumbnail"], true);
    let (status, headers, body) =
        t.raw(Method::GET, &format!("/api/v1/documents/{id}/thumbnail"), Some(&s.token), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    let thumb = image::load_from_memory(&body).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (256, 85));
}

async fn patches_are_not_held_to_the_global_rate_limit(b: Backend) {
    // Five requests a minute: a 12-chunk upload is more PATCHes than that.
    let t = TestApp::with(b, |c| c.throttle.global = lexiflow::ratelimit::Quota::per_seconds(5, 60)).await;
    let s = t.register("Limits").await;
    let case = t.case(&s, "RL-1").await;
    let bytes = pdf(12_000, 15);
    let path = create(&t, &s, &case, "many.pdf", bytes.len()).await;
    for (i, chunk) in bytes.chunks(1_000).enumerate() {
        patch(&t, &s, &path, i * 1_000, chunk).await.expect(204);
    }
    // Creations and HEADs still count.
    let mut limited = false;
    for _ in 0..10 {
        let r = tus(&t, Method::HEAD, &path, &s.token, &[], vec![]).await;
        if r.status.as_u16() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "HEADs are rate-limited");
}

async fn an_upload_started_on_one_instance_continues_on_another(b: Backend) {
    // Two instances on one database and one store (S3 on PostgreSQL, the same directory on
    // SQLite), as behind a load balancer: the state lives in the row, not in either process.
    let a = TestApp::new(b).await;
    let other = a.sibling().await;
    let s = a.register("Two").await;
    let case = a.case(&s, "2-1").await;
    let bytes = pdf(6 * 1024 * 1024 + 123, 16);
    let third = bytes.len() / 3;
    let path = create(&a, &s, &case, "split.pdf", bytes.len()).await;
    patch(&a, &s, &path, 0, &bytes[..third]).await.expect(204);
    assert_eq!(offset(&other, &s, &path).await, third as u64);
    patch(&other, &s, &path, third, &bytes[third..2 * third]).await.expect(204);
    patch(&a, &s, &path, 2 * third, &bytes[2 * third..]).await.expect(204);
    let id = path.rsplit('/').next().unwrap();
    let doc = file_document(&other, &s, &case, id, json!({})).await;
    let (status, _, body) = a
        .raw(Method::GET, &format!("/api/v1/documents/{}/download", doc["id"].as_str().unwrap()), Some(&s.token), &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&bytes));
}

async fn a_completion_that_failed_is_finished_when_the_client_comes_back(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Fail").await;
    let case = t.case(&s, "F-1").await;
    // The database refuses to mark uploads complete: the completion fails after the bytes were
    // moved to their blob (the last statement of its transaction), as if the database went away.
    match b {
        Backend::Sqlite => {
            t.sql_exec(
                "CREATE TRIGGER fail_completion BEFORE UPDATE ON uploads WHEN NEW.completed_at IS NOT NULL \
                 BEGIN SELECT RAISE(ABORT, 'simulated failure'); END",
            )
            .await
        }
        Backend::Postgres => {
            t.sql_exec(
                "CREATE FUNCTION fail_completion() RETURNS trigger AS $$ BEGIN \
                 IF NEW.completed_at IS NOT NULL THEN RAISE EXCEPTION 'simulated failure'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql",
            )
            .await;
            t.sql_exec(
                "CREATE TRIGGER fail_completion BEFORE UPDATE ON uploads FOR EACH ROW EXECUTE FUNCTION fail_completion()",
            )
            .await;
        }
    }
    let bytes = pdf(6 * 1024 * 1024 + 7, 17);
    let path = create(&t, &s, &case, "late.pdf", bytes.len()).await;
    patch(&t, &s, &path, 0, &bytes[..3_000_000]).await.expect(204);
    let r = patch(&t, &s, &path, 3_000_000, &bytes[3_000_000..]).await;
    r.expect(500);
    match b {
        Backend::Sqlite => t.sql_exec("DROP TRIGGER fail_completion").await,
        Backend::Postgres => t.sql_exec("DROP TRIGGER fail_completion ON uploads").await,
    }
    // The client comes back: HEAD finishes the upload and says it is whole.
    let head = tus(&t, Method::HEAD, &path, &s.token, &[], vec![]).await;
    head.expect(200);
    assert_eq!(head.header("upload-offset"), Some(bytes.len().to_string().as_str()));
    let id = path.rsplit('/').next().unwrap();
    let up = t.get(&format!("/api/v1/uploads/{id}"), &s.token).await;
    assert_eq!(up.data()["completed"], true);
    assert_eq!(up.data()["sha256"], sha256_hex(&bytes));
    let doc = file_document(&t, &s, &case, id, json!({})).await;
    let (status, _, body) = t
        .raw(Method::GET, &format!("/api/v1/documents/{}/download", doc["id"].as_str().unwrap()), Some(&s.token), &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&bytes));
    assert!(t.app.storage.list("staging").await.unwrap().is_empty(), "{:?}", t.app.storage.list("staging").await);
}
