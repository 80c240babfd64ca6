//! The PROXY protocol (HAProxy's, versions 1 and 2), read at the start of a connection
//! from a trusted load balancer so that the service sees the client's address rather
//! than the balancer's (patch 9 in PATCHES.md; not upstream).
//!
//! Only connections whose socket peer is in `Limits::trusted_proxies` may (and must)
//! start with a header; from anyone else a connection that starts like one is refused
//! (400, closed): a client cannot choose the address it is limited by.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Version 1 starts with this (then `TCP4|TCP6|UNKNOWN …\r\n`, at most 107 bytes).
const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;
/// Version 2's 12-byte signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Largest version 2 header accepted (16-byte fixed part + addresses + TLVs).
const V2_MAX: usize = 16 + 1024;

/// An address, or a CIDR range, whose connections are trusted to carry a PROXY header:
/// `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet {
    addr: IpAddr,
    prefix: u8,
}

impl TrustedNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for TrustedNet {
    type Err = String;
    fn from_str(s: &str) -> Result<TrustedNet, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(TrustedNet { addr, prefix })
    }
}

impl fmt::Display for TrustedNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the start of a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Not all of it has arrived yet.
    Incomplete,
    /// Not a valid PROXY header.
    Invalid,
    /// A valid header of `len` bytes; the client's address, or None when the header
    /// says to keep the connection's own (v2 `LOCAL`, as in a balancer's health check;
    /// v1 `UNKNOWN`; v2 families other than TCP over IPv4/IPv6).
    Valid { len: usize, source: Option<SocketAddr> },
}

/// Whether `buf` (the first bytes of a connection) starts like a PROXY header: Some(true)
/// it does, Some(false) it does not, None too few bytes to say.
pub fn sniff(buf: &[u8]) -> Option<bool> {
    let mut undecided = false;
    for sig in [V1_PREFIX, &V2_SIG[..]] {
        if buf.len() >= sig.len() {
            if buf.starts_with(sig) {
                return Some(true);
            }
        } else if sig.starts_with(buf) {
            undecided = true;
        }
    }
    if undecided {
        None
    } else {
        Some(false)
    }
}

/// Parse a PROXY header (v1 or v2) at the start of `buf`.
pub fn parse(buf: &[u8]) -> Header {
    match sniff(buf) {
        None => Header::Incomplete,
        Some(false) => Header::Invalid,
        Some(true) if buf.starts_with(V1_PREFIX) => parse_v1(buf),
        Some(true) => parse_v2(buf),
    }
}

fn parse_v1(buf: &[u8]) -> Header {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Header::Invalid
        } else {
            Header::Incomplete
        };
    };
    let len = end + 2;
    let Ok(line) = std::str::from_utf8(&buf[V1_PREFIX.len()..end]) else {
        return Header::Invalid;
    };
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Header::Valid { len, source: None },
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *family == "TCP4";
            let addr = |s: &str| -> Option<IpAddr> {
                if v4 {
                    s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
                } else {
                    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
                }
            };
            // Ports are decimal without leading zeros (or "0").
            let port = |s: &str| -> Option<u16> {
                (!s.is_empty() && s.len() <= 5 && (s == "0" || !s.starts_with('0')))
                    .then(|| s.parse().ok())
                    .flatten()
            };
            match (addr(src), addr(dst), port(sport), port(dport)) {
                (Some(ip), Some(_), Some(p), Some(_)) => Header::Valid {
                    len,
                    source: Some(SocketAddr::new(ip, p)),
                },
                _ => Header::Invalid,
            }
        }
        _ => Header::Invalid,
    }
}

fn parse_v2(buf: &[u8]) -> Header {
    if buf.len() < 16 {
        return Header::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return Header::Invalid;
    }
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = 16 + body;
    if len > V2_MAX {
        return Header::Invalid;
    }
    if buf.len() < len {
        return Header::Incomplete;
    }
    let a = &buf[16..len];
    if command == 0 {
        // LOCAL: the balancer speaking for itself (health checks).
        return Header::Valid { len, source: None };
    }
    match buf[13] {
        // TCP over IPv4: src(4) dst(4) sport(2) dport(2).
        0x11 if a.len() >= 12 => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            Header::Valid {
                len,
                source: Some(SocketAddr::new(IpAddr::V4(ip), port)),
            }
        }
        // TCP over IPv6: src(16) dst(16) sport(2) dport(2).
        0x21 if a.len() >= 36 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Header::Valid {
                len,
                source: Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port)),
            }
        }
        0x11 | 0x21 => Header::Invalid,
        // UNSPEC, UDP, UNIX: keep the connection's own address.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => Header::Valid { len, source: None },
        _ => Header::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, addrs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h
    }

    #[test]
    fn v1_tcp4_tcp6_unknown_and_garbage() {
        let h = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 8080\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Header::Valid { len: 43, source: Some("127.0.0.2:40000".parse().unwrap()) }
        );
        let h = b"PROXY TCP6 ::2 ::1 1 2\r\n";
        assert_eq!(
            parse(h),
            Header::Valid { len: h.len(), source: Some("[::2]:1".parse().unwrap()) }
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Header::Valid { len: 15, source: None });
        assert_eq!(parse(b"PROXY TCP4 127.0.0.2 127.0.0.1 40000"), Header::Incomplete);
        assert_eq!(parse(b"PRO"), Header::Incomplete);
        for bad in [
            &b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n"[..],
            b"PROXY TCP4 127.0.0.2 127.0.0.1 99999 2\r\n",
            b"PROXY TCP4 127.0.0.2 127.0.0.1 01 2\r\n",
            b"PROXY TCP4 127.0.0.2 127.0.0.1 1\r\n",
            b"PROXY TCP5 127.0.0.2 127.0.0.1 1 2\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Header::Invalid, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(&[b'P'; 200][..]), Header::Invalid);
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat(b'1').take(120));
        assert_eq!(parse(&long), Header::Invalid);
    }

    #[test]
    fn v2_proxy_local_and_bounds() {
        let h = v2(1, 0x11, &[127, 0, 0, 3, 127, 0, 0, 1, 0x9c, 0x40, 0x1f, 0x90]);
        assert_eq!(
            parse(&h),
            Header::Valid { len: 28, source: Some("127.0.0.3:40000".parse().unwrap()) }
        );
        assert_eq!(parse(&h[..20]), Header::Incomplete);
        assert_eq!(parse(&h[..10]), Header::Incomplete);
        assert_eq!(parse(&v2(0, 0x00, &[])), Header::Valid { len: 16, source: None });
        assert_eq!(parse(&v2(1, 0x11, &[1, 2, 3])), Header::Invalid);
        assert_eq!(parse(&v2(2, 0x11, &[0; 12])), Header::Invalid);
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert_eq!(parse(&wrong_version), Header::Invalid);
        let mut huge = v2(1, 0x11, &[0; 12]);
        huge[14..16].copy_from_slice(&60000u16.to_be_bytes());
        assert_eq!(parse(&huge), Header::Invalid);
    }

    #[test]
    fn sniff_tells_a_request_from_a_header() {
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"PROX"), None);
        assert_eq!(sniff(b"\r\n\r\n"), None);
        assert_eq!(sniff(b"PROXY "), Some(true));
        assert_eq!(sniff(V2_SIG), Some(true));
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(sniff(b"POST"), Some(false));
        assert_eq!(sniff(b"\r\n\r\nX"), Some(false));
    }

    #[test]
    fn trusted_nets() {
        let n: TrustedNet = "127.0.0.0/8".parse().unwrap();
        assert!(n.contains("127.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!n.contains("10.0.0.1".parse().unwrap()));
        let one: TrustedNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: TrustedNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: TrustedNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("127.0.0.1".parse().unwrap()));
        for bad in ["", "localhost", "127.0.0.1/33", "::1/129", "1.2.3.4/x"] {
            assert!(bad.parse::<TrustedNet>().is_err(), "{bad}");
        }
    }
}
