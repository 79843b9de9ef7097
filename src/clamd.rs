//! A ClamAV client: clamd's `INSTREAM` command over TCP, through a circuit breaker.
//!
//! The reply is parsed here, strictly: only `stream: OK` is clean and only
//! `stream: <signature> FOUND` is infected. Anything else — `INSTREAM size limit exceeded.
//! ERROR`, a closed connection, a timeout — is an error, never "clean" and never "infected".

use std::{io, sync::LazyLock, time::Duration};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::resilience::{Breaker, BreakerConfig, CallError, guarded};

/// Largest piece sent in one INSTREAM chunk.
const CHUNK: usize = 256 * 1024;
/// Longest reply read.
const MAX_REPLY: u64 = 4096;

/// What clamd said about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The signature's name.
    Infected(String),
}

/// Why a scan gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("clamd: {0}")]
    Io(#[from] io::Error),
    /// clamd answered with an error (size limit, a bad command) or something unexpected.
    #[error("clamd answered {0:?}")]
    Refused(String),
    #[error(transparent)]
    Unavailable(CallError<io::Error>),
}

static BREAKER: LazyLock<Breaker> = LazyLock::new(|| Breaker::new("clamd", BreakerConfig::default()));

/// Parses clamd's reply to INSTREAM.
pub fn parse_reply(reply: &str) -> Result<Verdict, ScanError> {
    let r = reply.trim_end_matches(['\0', '\n', '\r', ' ']);
    let body = r.strip_prefix("stream: ").unwrap_or(r);
    if body == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(sig) = body.strip_suffix(" FOUND")
        && !sig.is_empty()
        && !sig.contains("ERROR")
    {
        return Ok(Verdict::Infected(sig.to_owned()));
    }
    Err(ScanError::Refused(r.to_owned()))
}

/// Sends `bytes` to clamd at `addr` (`host:port`) and returns its verdict.
pub async fn scan<S>(addr: &str, timeout: Duration, bytes: S) -> Result<Verdict, ScanError>
where
    S: Stream<Item = io::Result<Bytes>> + Send,
{
    let reply = guarded(&BREAKER, timeout, instream(addr, bytes)).await.map_err(|e| match e {
        CallError::Failed(io) => ScanError::Io(io),
        other => ScanError::Unavailable(other),
    })?;
    parse_reply(&reply)
}

async fn instream<S>(addr: &str, bytes: S) -> io::Result<String>
where
    S: Stream<Item = io::Result<Bytes>> + Send,
{
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let sent = async {
        conn.write_all(b"zINSTREAM\0").await?;
        let mut bytes = std::pin::pin!(bytes);
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk?;
            for piece in chunk.chunks(CHUNK) {
                conn.write_all(&(piece.len() as u32).to_be_bytes()).await?;
                conn.write_all(piece).await?;
            }
        }
        conn.write_all(&0u32.to_be_bytes()).await?;
        conn.flush().await
    }
    .await;
    // clamd stops reading and answers when a limit is passed: its reply says why, so read it
    // even when sending failed.
    let mut reply = Vec::new();
    let read = (&mut conn).take(MAX_REPLY).read_to_end(&mut reply).await;
    if reply.is_empty() {
        sent?;
        read?;
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "clamd closed the connection without a reply"));
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Whether clamd at `addr` answers `PING` (for the health check).
pub async fn ping(addr: &str, timeout: Duration) -> Result<(), ScanError> {
    let reply = guarded(&BREAKER, timeout, async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(b"zPING\0").await?;
        let mut reply = Vec::new();
        (&mut conn).take(64).read_to_end(&mut reply).await?;
        Ok::<_, io::Error>(String::from_utf8_lossy(&reply).into_owned())
    })
    .await
    .map_err(|e| match e {
        CallError::Failed(io) => ScanError::Io(io),
        other => ScanError::Unavailable(other),
    })?;
    if reply.trim_end_matches(['\0', '\n']) == "PONG" { Ok(()) } else { Err(ScanError::Refused(reply)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ok_is_clean_and_only_found_is_infected() {
        assert_eq!(parse_reply("stream: OK\0").ok(), Some(Verdict::Clean));
        assert_eq!(
            parse_reply("stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0").ok(),
            Some(Verdict::Infected("Eicar-Test-Signature.UNOFFICIAL".into()))
        );
        for bad in
            ["INSTREAM size limit exceeded. ERROR\0", "stream: OK ERROR", "", "UNKNOWN COMMAND", "stream:  FOUND"]
        {
            assert!(parse_reply(bad).is_err(), "{bad:?}");
        }
    }
}
