//! tus 1.0.0 header grammar: `Upload-Metadata`, `Upload-Checksum`, `Upload-Expires`, and the
//! checks on a client's file name. Pure functions, so each rule is tested on its own.

use base64::Engine;
use chrono::{DateTime, Utc};

/// The protocol version served.
pub const VERSION: &str = "1.0.0";
/// The extensions served.
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
/// `Upload-Checksum` algorithms accepted.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// Longest `Upload-Metadata` header accepted.
pub const MAX_METADATA: usize = 4096;
/// Longest file name accepted, in bytes.
pub const MAX_FILENAME: usize = 255;

/// Parses `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be absent).
/// Keys are unique, non-empty, without spaces or commas; values are UTF-8.
pub fn parse_metadata(header: &str) -> Result<Vec<(String, Option<String>)>, String> {
    if header.len() > MAX_METADATA {
        return Err(format!("Upload-Metadata is longer than {MAX_METADATA} bytes"));
    }
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for pair in header.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let mut parts = pair.split(' ').filter(|p| !p.is_empty());
        let key = parts.next().unwrap_or_default();
        let value = parts.next();
        if parts.next().is_some() {
            return Err(format!("Upload-Metadata pair {key:?} has more than a key and a value"));
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err("Upload-Metadata keys must be non-empty ASCII without spaces or commas".into());
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(format!("Upload-Metadata key {key:?} appears twice"));
        }
        let value = match value {
            None => None,
            Some(v) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|_| format!("Upload-Metadata value of {key:?} is not base64"))?;
                Some(String::from_utf8(raw).map_err(|_| format!("Upload-Metadata value of {key:?} is not UTF-8"))?)
            }
        };
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// A checksum algorithm of `Upload-Checksum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

impl Algorithm {
    /// The aws-lc-rs digest.
    pub fn digest(self) -> &'static aws_lc_rs::digest::Algorithm {
        match self {
            Algorithm::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Algorithm::Sha256 => &aws_lc_rs::digest::SHA256,
        }
    }
}

/// Why a header was refused: 400, or 400 for an algorithm we do not support (tus says so).
pub fn parse_checksum(header: &str) -> Result<(Algorithm, Vec<u8>), String> {
    let (name, value) = header.trim().split_once(' ').ok_or("Upload-Checksum must be `<algorithm> <base64>`")?;
    let algo = match name.to_ascii_lowercase().as_str() {
        "sha1" => Algorithm::Sha1,
        "sha256" => Algorithm::Sha256,
        other => return Err(format!("checksum algorithm {other:?} is not supported; use {CHECKSUM_ALGORITHMS}")),
    };
    let sum = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| "Upload-Checksum value is not base64".to_owned())?;
    if sum.len() != algo.digest().output_len() {
        return Err(format!("a {name} checksum is {} bytes", algo.digest().output_len()));
    }
    Ok((algo, sum))
}

/// `Upload-Expires` (RFC 9110's IMF-fixdate).
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Checks a client's file name: it names a file, not a path. Refused: empty, longer than
/// [`MAX_FILENAME`] bytes, `.` or `..`, any `/` or `\`, and control characters.
pub fn check_filename(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("filename is empty".into());
    }
    if name.len() > MAX_FILENAME {
        return Err(format!("filename is longer than {MAX_FILENAME} bytes"));
    }
    if name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err("filename must be a file name, not a path".into());
    }
    if name.chars().any(char::is_control) {
        return Err("filename holds control characters".into());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn metadata_pairs_decode_and_bad_ones_are_refused() {
        let h = format!("filename {},filetype {}, is_confidential", b64("brief.pdf"), b64("application/pdf"));
        let m = parse_metadata(&h).unwrap_or_default();
        assert_eq!(m[0], ("filename".into(), Some("brief.pdf".into())));
        assert_eq!(m[1], ("filetype".into(), Some("application/pdf".into())));
        assert_eq!(m[2], ("is_confidential".into(), None));
        assert!(parse_metadata(&format!("a {},a {}", b64("x"), b64("y"))).is_err());
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a b c").is_err());
        assert!(parse_metadata(&"x".repeat(MAX_METADATA + 1)).is_err());
        assert_eq!(parse_metadata("").map(|m| m.len()), Ok(0));
    }

    #[test]
    fn checksums_need_a_known_algorithm_and_the_right_length() {
        let sha1 = base64::engine::general_purpose::STANDARD.encode([0u8; 20]);
        assert_eq!(parse_checksum(&format!("sha1 {sha1}")).map(|c| c.0), Ok(Algorithm::Sha1));
        assert!(parse_checksum(&format!("sha256 {sha1}")).is_err());
        assert!(parse_checksum(&format!("md5 {sha1}")).is_err());
        assert!(parse_checksum("sha1").is_err());
    }

    #[test]
    fn file_names_that_are_paths_are_refused() {
        assert_eq!(check_filename(" Motion to dismiss.pdf "), Ok("Motion to dismiss.pdf".into()));
        assert_eq!(check_filename("Schriftsatz für Müller.docx"), Ok("Schriftsatz für Müller.docx".into()));
        for bad in ["", "..", ".", "../../etc/passwd", "a/b.pdf", "..\\win.ini", "a\u{0}b", "x\ny"] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
        assert!(check_filename(&"a".repeat(256)).is_err());
    }

    #[test]
    fn expiry_is_an_http_date() {
        let t = DateTime::parse_from_rfc3339("2026-12-07T08:05:09Z").map(|t| t.with_timezone(&Utc));
        assert_eq!(t.map(http_date), Ok("Mon, 07 Dec 2026 08:05:09 GMT".to_owned()));
    }
}
