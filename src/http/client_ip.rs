//! The client's address: the TCP peer, or — only when the peer is a trusted proxy
//! (`TRUSTED_PROXIES`) — the nearest untrusted address in `X-Forwarded-For`. A client cannot
//! pick its own rate-limit bucket or forge the address kept on its session by sending the
//! header itself.

use std::net::{IpAddr, SocketAddr};

/// The resolved client address, put in request extensions by the request-context middleware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// An address block such as `10.0.0.0/8`, `::1` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `addr` or `addr/bits`.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Self { net, bits })
    }

    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(u32::from(n).into(), u32::from(a).into(), self.bits, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), self.bits, 128),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8, width: u32) -> bool {
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (b >> shift)
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    s.strip_prefix('[').and_then(|r| r.split_once(']')).and_then(|(ip, _)| ip.parse().ok())
}

/// The client address of a request whose TCP peer is `peer`; `forwarded_for` holds every
/// `X-Forwarded-For` header line in order (a proxy may add its own line).
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Walk from the nearest hop outwards; the first address we do not trust is the client.
    // An entry that is not an address stops the walk: nothing beyond it can be believed.
    let mut last_trusted = peer;
    for entry in forwarded_for.iter().flat_map(|h| h.split(',')).collect::<Vec<_>>().into_iter().rev() {
        match parse_hop(entry) {
            Some(ip) if is_trusted(ip) => last_trusted = ip,
            Some(ip) => return ip,
            None => return last_trusted,
        }
    }
    last_trusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        assert_eq!(client_ip(ip("203.0.113.9"), &["1.2.3.4"], &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap(), Cidr::parse("::1").unwrap()];
        // The client sent a forged first entry; the proxy appended the real address.
        assert_eq!(client_ip(ip("10.1.2.3"), &["6.6.6.6, 198.51.100.7, 10.0.0.5"], &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("::1"), &["198.51.100.7"], &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("10.1.2.3"), &[], &trusted), ip("10.1.2.3"));
        // A forged first line does not win over the line the proxy appended.
        assert_eq!(client_ip(ip("10.1.2.3"), &["6.6.6.6", "198.51.100.7:5555"], &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("10.1.2.3"), &["[2001:db8::7]:443"], &trusted), ip("2001:db8::7"));
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(client_ip(ip("10.1.2.3"), &["6.6.6.6, junk, 10.0.0.9"], &trusted), ip("10.0.0.9"));
    }

    #[test]
    fn cidr_blocks_match_by_prefix() {
        let c = Cidr::parse("192.168.0.0/16").unwrap();
        assert!(c.contains(ip("192.168.44.1")));
        assert!(c.contains(ip("::ffff:192.168.1.1")));
        assert!(!c.contains(ip("192.169.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nonsense").is_none());
    }
}
