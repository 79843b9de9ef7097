//! What a file is, from its first bytes (magic numbers), never from what the client declared;
//! and the allowlist of what a law firm's document store takes.

/// The types accepted: PDF, Word, Excel, PowerPoint (old and OOXML), RTF, plain text, e-mail
/// (EML, Outlook MSG) and JPEG/PNG/GIF/WebP/TIFF images.
pub const ALLOWED: [&str; 17] = [
    "application/pdf",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/rtf",
    "text/plain",
    "message/rfc822",
    "application/vnd.ms-outlook",
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/tiff",
    // Not an upload type: what an empty file is recorded as.
    "application/x-empty",
];

/// Bytes read from the start of a file to decide its type.
pub const HEAD_BYTES: usize = 64 * 1024;

const OLE2: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// Header names that open an RFC 5322 message.
const MAIL_HEADERS: [&str; 10] = [
    "from:",
    "received:",
    "return-path:",
    "mime-version:",
    "date:",
    "subject:",
    "to:",
    "message-id:",
    "delivered-to:",
    "x-",
];

/// The MIME type of a file whose first bytes are `head` (`total` bytes in all), or why it is
/// not accepted.
pub fn detect(head: &[u8], total: u64) -> Result<&'static str, String> {
    if total == 0 {
        return Ok("application/x-empty");
    }
    if let Some(t) = infer::get(head) {
        let mime = t.mime_type();
        return ALLOWED
            .iter()
            .find(|a| **a == mime)
            .copied()
            .ok_or_else(|| format!("files of type {mime} are not accepted"));
    }
    // OLE2 containers infer did not name: only an Outlook message (its property streams are
    // named `__substg1.0_…`) is taken; installers (MSI) and the rest are not.
    if head.starts_with(OLE2) {
        return if contains_utf16(head, "__substg1.0_") {
            Ok("application/vnd.ms-outlook")
        } else {
            Err("this OLE2 file is not a Word, Excel, PowerPoint or Outlook file".into())
        };
    }
    let text = text_prefix(head).ok_or("the file's type is not recognised and it is not text")?;
    let first = text.trim_start().lines().next().unwrap_or("").to_ascii_lowercase();
    if MAIL_HEADERS.iter().any(|h| first.starts_with(h)) && text.contains("\n") && looks_like_headers(text) {
        return Ok("message/rfc822");
    }
    Ok("text/plain")
}

/// The text of `head` when it is UTF-8 (a character cut at the end of the window is allowed)
/// without NUL bytes.
fn text_prefix(head: &[u8]) -> Option<&str> {
    if head.contains(&0) {
        return None;
    }
    match std::str::from_utf8(head) {
        Ok(s) => Some(s),
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

/// Whether the lines up to the first blank one are `Name: value` headers (or folded lines).
fn looks_like_headers(text: &str) -> bool {
    let mut n = 0;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        let folded = line.starts_with([' ', '\t']);
        let header = line
            .split_once(':')
            .is_some_and(|(name, _)| !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !folded && !header {
            return false;
        }
        n += 1;
    }
    n >= 2
}

fn contains_utf16(hay: &[u8], needle: &str) -> bool {
    let pat: Vec<u8> = needle.encode_utf16().flat_map(u16::to_le_bytes).collect();
    hay.windows(pat.len()).any(|w| w == pat.as_slice())
}

/// An image's width and height from its header, for the types whose header is read here
/// (PNG, GIF, JPEG, WebP), so a decompression bomb is refused before anything decodes it.
pub fn image_size(head: &[u8]) -> Option<(u64, u64)> {
    let be32 = |b: &[u8]| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let le16 = |b: &[u8]| u64::from(u16::from_le_bytes([b[0], b[1]]));
    if head.len() >= 24 && head.starts_with(b"\x89PNG\r\n\x1a\n") && &head[12..16] == b"IHDR" {
        return Some((be32(&head[16..20]), be32(&head[20..24])));
    }
    if head.len() >= 10 && (head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a")) {
        return Some((le16(&head[6..8]), le16(&head[8..10])));
    }
    if head.len() >= 30 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        let le24 = |b: &[u8]| u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16;
        return match &head[12..16] {
            b"VP8X" => Some((le24(&head[24..27]) + 1, le24(&head[27..30]) + 1)),
            b"VP8L" => {
                let b = &head[21..25];
                let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                Some((u64::from(bits & 0x3FFF) + 1, u64::from((bits >> 14) & 0x3FFF) + 1))
            }
            b"VP8 " => Some((le16(&head[26..28]) & 0x3FFF, le16(&head[28..30]) & 0x3FFF)),
            _ => None,
        };
    }
    if head.starts_with(&[0xFF, 0xD8]) {
        // Walk the markers to the first start-of-frame.
        let mut i = 2;
        while i + 9 < head.len() {
            if head[i] != 0xFF {
                return None;
            }
            let marker = head[i + 1];
            let len = usize::from(u16::from_be_bytes([head[i + 2], head[i + 3]]));
            if matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) {
                let h = u64::from(u16::from_be_bytes([head[i + 5], head[i + 6]]));
                let w = u64::from(u16::from_be_bytes([head[i + 7], head[i + 8]]));
                return Some((w, h));
            }
            i += 2 + len;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes_and_only_allowed_ones_pass() {
        assert_eq!(detect(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", 30), Ok("application/pdf"));
        assert_eq!(detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0", 30), Ok("image/png"));
        assert_eq!(detect("Dear Counsel,\nplease find…".as_bytes(), 30), Ok("text/plain"));
        assert_eq!(
            detect(b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody", 60),
            Ok("message/rfc822")
        );
        assert_eq!(detect(b"", 0), Ok("application/x-empty"));
        // A Windows executable, whatever it is called.
        assert!(detect(b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0", 16).is_err());
        // An ELF binary and a zip that is not an Office file.
        assert!(detect(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0", 16).is_err());
        assert!(detect(b"PK\x03\x04\x14\0\0\0\x08\0payload.exe", 21).is_err());
        // Binary noise.
        assert!(detect(&[0x00, 0x9f, 0x92, 0x96, 0x01], 5).is_err());
        // An OLE2 file that is not an Office document or a message (an MSI, say).
        let mut msi = OLE2.to_vec();
        msi.extend_from_slice(&[0; 504]);
        assert!(detect(&msi, 512).is_err());
    }

    #[test]
    fn image_sizes_are_read_from_headers() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&100_000u32.to_be_bytes());
        assert_eq!(image_size(&png), Some((100_000, 100_000)));
        assert_eq!(image_size(b"GIF89a\x10\x00\x20\x00"), Some((16, 32)));
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8, 0, 48, 0, 64, 3, 0, 0, 0];
        assert_eq!(image_size(&jpeg), Some((64, 48)));
        assert_eq!(image_size(b"%PDF-1.7"), None);
    }
}
