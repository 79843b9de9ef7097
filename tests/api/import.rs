//! CSV import through the library the `lexiflow import` command runs: a 100,000-row file,
//! rejected rows reported with their line numbers, atomic imports leaving nothing behind.

use std::io::Write;

use lexiflow::{
    cases::bulk::{BulkMode, OnConflict},
    import::{self, ImportOptions},
};

use crate::support::{Backend, TestApp};

crate::on_both_backends!(a_hundred_thousand_rows_import_with_rejects_reported_by_line, parties_import_by_case_number);

const HEADER: &str = "caseNumber,title,type,status,court,filedAt,clientName";

fn opts(actor: &str, mode: BulkMode, rejects: &std::path::Path) -> ImportOptions {
    ImportOptions {
        actor: actor.to_owned(),
        mode,
        on_conflict: OnConflict::Fail,
        rejects: Some(rejects.to_owned()),
        progress: false,
    }
}

async fn a_hundred_thousand_rows_import_with_rejects_reported_by_line(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Import").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    writeln!(f, "{HEADER}").unwrap();
    // Line 1 is the header; row i is on line i + 2. Three rows are bad.
    let bad = [10usize, 50_000, 99_999];
    for i in 0..100_000usize {
        match i {
            10 => writeln!(f, "IMP-{i},,civil,open,,,").unwrap(),
            50_000 => writeln!(f, "IMP-{i},\"A, quoted title\",no_such_type,open,,,").unwrap(),
            99_999 => writeln!(f, "IMP-{i},Late,civil,open,,not-a-date,").unwrap(),
            _ => {
                writeln!(f, "IMP-{i},\"Matter {i}, in re\",civil,open,Court {},2026-01-02T03:04:05Z,Client {i}", i % 7)
                    .unwrap()
            }
        }
    }
    f.flush().unwrap();
    drop(f);
    let rejects = dir.path().join("rejects.csv");

    // Atomic: the bad rows refuse the whole file; nothing is written.
    let report = import::cases(&t.app, &file, &opts(&s.email, BulkMode::Atomic, &rejects)).await.unwrap();
    assert!(!report.committed);
    assert_eq!((report.imported, report.rejected), (0, 3));
    let n = t.sql("SELECT COUNT(*) FROM cases").await[0].try_get_by_index::<i64>(0).unwrap();
    assert_eq!(n, 0);

    // Partial: the good rows go in, the bad ones are reported by line.
    let report = import::cases(&t.app, &file, &opts(&s.email, BulkMode::Partial, &rejects)).await.unwrap();
    assert!(report.committed);
    assert_eq!((report.rows, report.imported, report.rejected), (100_000, 99_997, 3));
    let n = t.sql("SELECT COUNT(*) FROM cases").await[0].try_get_by_index::<i64>(0).unwrap();
    assert_eq!(n, 99_997);
    let n = t.sql("SELECT COUNT(*) FROM audit_entries WHERE action = 'case.bulk_create'").await[0]
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(n, 99_997, "every imported row is audited");
    let mut r = csv::Reader::from_path(&rejects).unwrap();
    let lines: Vec<u64> = r.records().map(|rec| rec.unwrap()[0].parse().unwrap()).collect();
    assert_eq!(lines, bad.iter().map(|i| *i as u64 + 2).collect::<Vec<_>>());
    let text = std::fs::read_to_string(&rejects).unwrap();
    assert!(text.contains("title") && text.contains("no_such_type"), "{text}");
    let c = t.get("/api/v1/cases?limit=1&q=IMP-0000", &s.token).await;
    c.expect(200);

    // The chain over 100,000 entries still verifies.
    let v = t.get("/api/v1/audit/verify", &s.token).await;
    assert_eq!(v.expect(200).data()["valid"], true);

    // A file with an unknown column is refused before anything is read into the database.
    let odd = dir.path().join("odd.csv");
    std::fs::write(&odd, "caseNumber,title,type,colour\nX-1,T,civil,red\n").unwrap();
    let e = import::cases(&t.app, &odd, &opts(&s.email, BulkMode::Partial, &rejects)).await.unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
}

async fn parties_import_by_case_number(b: Backend) {
    let t = TestApp::new(b).await;
    let s = t.register("Parties").await;
    let id = t.case(&s, "PI-1").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("parties.csv");
    std::fs::write(
        &file,
        "caseNumber,name,kind,type,email\nPI-1,Acme Corp,organization,plaintiff,legal@acme.test\nNOPE-9,Ghost,individual,witness,\nPI-1,Jo Doe,individual,defendant,not-an-email\nPI-1,Ann Roe,individual,witness,\n",
    )
    .unwrap();
    let rejects = dir.path().join("rejects.csv");
    let report = import::parties(&t.app, &file, &opts(&s.email, BulkMode::Partial, &rejects)).await.unwrap();
    assert_eq!((report.imported, report.rejected), (2, 2));
    let mut r = csv::Reader::from_path(&rejects).unwrap();
    let rows: Vec<(u64, String)> =
        r.records().map(|rec| rec.unwrap()).map(|r| (r[0].parse().unwrap(), r[1].to_owned())).collect();
    assert_eq!(rows, vec![(3, "RESOURCE_NOT_FOUND".to_owned()), (4, "VALIDATION_FAILED".to_owned())]);
    let list = t.get(&format!("/api/v1/cases/{id}/parties"), &s.token).await;
    assert_eq!(list.expect(200).body["meta"]["pagination"]["total"], 2);
    // An unknown actor is refused.
    assert!(import::parties(&t.app, &file, &opts("nobody@nowhere.test", BulkMode::Partial, &rejects)).await.is_err());
}
