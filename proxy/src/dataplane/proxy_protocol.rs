//! The PROXY protocol (versions 1 and 2, as HAProxy specifies it), which a
//! load balancer in front of switchyard sends first on each connection to
//! say whose connection it is. A listener with `proxy_protocol = true`
//! takes only connections that begin with one; the address it names is the
//! connection's client from then on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest version 1 header: `PROXY UNKNOWN` with the longest
/// addresses and ports, CRLF included.
pub(crate) const V1_MAX: usize = 107;
/// What every header is at least: `PROXY UNKNOWN\r\n` is 15 bytes, a
/// version 2 header at least 16. Reading this much first never takes a
/// byte of what follows.
pub(crate) const MIN_HEADER: usize = 15;
/// A version 2 header's fixed part.
pub(crate) const V2_FIXED: usize = 16;
/// The longest version 2 address block taken (with its TLVs): more is not
/// a load balancer's header.
pub(crate) const V2_MAX_BLOCK: usize = 1024;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads the header at the start of `tcp`, and not a byte more: what
/// follows (a ClientHello, a request) is left for what reads next. The
/// client it names, `None` when it names none (`LOCAL`, `UNKNOWN`).
pub(crate) async fn read(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, ReadError> {
    let mut first = [0u8; MIN_HEADER];
    tcp.read_exact(&mut first).await?;
    match start(&first)? {
        Start::V2 => {
            let mut fixed = [0u8; V2_FIXED];
            fixed[..MIN_HEADER].copy_from_slice(&first);
            tcp.read_exact(&mut fixed[MIN_HEADER..]).await?;
            let mut block = vec![0; v2_block_len(&fixed)?];
            tcp.read_exact(&mut block).await?;
            Ok(parse_v2(&fixed, &block)?)
        }
        Start::V1 => {
            let mut line = first.to_vec();
            let mut peeked = [0u8; V1_MAX];
            while !line.ends_with(b"\r\n") {
                let room = V1_MAX.saturating_sub(line.len());
                if room == 0 {
                    return Err(BadHeader::Invalid("no CRLF within 107 bytes").into());
                }
                // Up to the line's end if it is here, else all that is
                // here (all of it the line's, then): never past the line.
                let n = tcp.peek(&mut peeked[..room]).await?;
                if n == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                }
                let take = peeked[..n]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(n, |i| i + 1);
                tcp.read_exact(&mut peeked[..take]).await?;
                line.extend_from_slice(&peeked[..take]);
            }
            Ok(parse_v1(&line)?)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Bad(#[from] BadHeader),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadHeader {
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    #[error("bad PROXY protocol header: {0}")]
    Invalid(&'static str),
}

/// Which version the first [`MIN_HEADER`] bytes begin.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// Version 1: the header ends with the first CRLF, within [`V1_MAX`].
    V1,
    /// Version 2: read up to [`V2_FIXED`] and see [`v2_block_len`].
    V2,
}

pub(crate) fn start(first: &[u8]) -> Result<Start, BadHeader> {
    if first.starts_with(b"PROXY ") {
        Ok(Start::V1)
    } else if first.len() >= V2_SIGNATURE.len() && first[..12] == V2_SIGNATURE[..] {
        Ok(Start::V2)
    } else {
        Err(BadHeader::Missing)
    }
}

/// The client a version 1 line (CRLF included) names: `None` for
/// `UNKNOWN`, which leaves the connection's own peer as the client.
pub(crate) fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, BadHeader> {
    let bad = BadHeader::Invalid;
    let line = line.strip_suffix(b"\r\n").ok_or(bad("no CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| bad("not text"))?;
    let mut words = line.split(' ');
    if words.next() != Some("PROXY") {
        return Err(BadHeader::Missing);
    }
    let family = words.next().ok_or(bad("no protocol"))?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = words.collect();
    let [source, _destination, source_port, destination_port] = fields[..] else {
        return Err(bad("not four address fields"));
    };
    let ip: IpAddr = match family {
        "TCP4" => IpAddr::V4(source.parse().map_err(|_| bad("bad IPv4 source"))?),
        "TCP6" => IpAddr::V6(source.parse().map_err(|_| bad("bad IPv6 source"))?),
        _ => return Err(bad("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let port = |text: &str| -> Result<u16, BadHeader> {
        // Decimal without leading zeros or signs, as the spec writes them.
        let digits = text.bytes().all(|b| b.is_ascii_digit());
        if !digits || text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
            return Err(bad("bad port"));
        }
        text.parse().map_err(|_| bad("bad port"))
    };
    let source_port = port(source_port)?;
    port(destination_port)?;
    Ok(Some(SocketAddr::new(ip, source_port)))
}

/// The length of the address block after a version 2 header's fixed part,
/// checked: version 2, a known command, not over [`V2_MAX_BLOCK`].
pub(crate) fn v2_block_len(fixed: &[u8; V2_FIXED]) -> Result<usize, BadHeader> {
    let bad = BadHeader::Invalid;
    if fixed[..12] != V2_SIGNATURE[..] {
        return Err(BadHeader::Missing);
    }
    if fixed[12] >> 4 != 2 {
        return Err(bad("version is not 2"));
    }
    if fixed[12] & 0x0f > 1 {
        return Err(bad("command is not LOCAL or PROXY"));
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    if len > V2_MAX_BLOCK {
        return Err(bad("address block too long"));
    }
    Ok(len)
}

/// The client a version 2 header names: `None` for `LOCAL` (the load
/// balancer's own connection, a health check) and for families other
/// than TCP over IPv4 or IPv6.
pub(crate) fn parse_v2(
    fixed: &[u8; V2_FIXED],
    block: &[u8],
) -> Result<Option<SocketAddr>, BadHeader> {
    let bad = BadHeader::Invalid;
    let len = v2_block_len(fixed)?;
    if block.len() != len {
        return Err(bad("address block cut short"));
    }
    if fixed[12] & 0x0f == 0 {
        return Ok(None);
    }
    match fixed[13] {
        0x11 => {
            let a = block.get(..12).ok_or(bad("IPv4 block too short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        0x21 => {
            let a = block.get(..36).ok_or(bad("IPv6 block too short"))?;
            let octets: [u8; 16] = a[..16].try_into().expect("16 bytes");
            let ip = Ipv6Addr::from(octets);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        // UNSPEC, UDP or Unix sockets: nothing an HTTP client is.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, block: &[u8]) -> ([u8; V2_FIXED], Vec<u8>) {
        let mut fixed = [0u8; V2_FIXED];
        fixed[..12].copy_from_slice(V2_SIGNATURE);
        fixed[12] = 0x20 | command;
        fixed[13] = family;
        fixed[14..].copy_from_slice(&(block.len() as u16).to_be_bytes());
        (fixed, block.to_vec())
    }

    #[test]
    fn version_1_names_the_client() {
        let addr = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n"),
            Ok(addr("192.0.2.7:56324"))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 80\r\n"),
            Ok(addr("[2001:db8::7]:65535"))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(None));
        assert_eq!(parse_v1(b"PROXY UNKNOWN ffff:: ffff:: 1 2\r\n"), Ok(None));
        let tcp6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert!(parse_v1(tcp6).unwrap().is_some());
        let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), V1_MAX);
        assert_eq!(parse_v1(longest), Ok(None));
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443"[..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 01 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +1 2\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn version_2_names_the_client_or_leaves_the_peer() {
        let mut v4 = vec![192, 0, 2, 7, 10, 0, 0, 1, 0xdb, 0xc4, 0x01, 0xbb];
        let (fixed, block) = v2(1, 0x11, &v4);
        assert_eq!(start(&fixed), Ok(Start::V2));
        assert_eq!(
            parse_v2(&fixed, &block),
            Ok(Some("192.0.2.7:56260".parse().unwrap()))
        );
        // TLVs after the addresses are skipped.
        v4.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
        let (fixed, block) = v2(1, 0x11, &v4);
        assert_eq!(
            parse_v2(&fixed, &block),
            Ok(Some("192.0.2.7:56260".parse().unwrap()))
        );
        let mut v6 = [0u8; 36];
        v6[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        v6[32..34].copy_from_slice(&8080u16.to_be_bytes());
        let (fixed, block) = v2(1, 0x21, &v6);
        assert_eq!(
            parse_v2(&fixed, &block),
            Ok(Some("[2001:db8::7]:8080".parse().unwrap()))
        );
        // LOCAL: the balancer's own connection.
        let (fixed, block) = v2(0, 0x00, &[]);
        assert_eq!(parse_v2(&fixed, &block), Ok(None));
        // Too short a block for its family, a cut block, a bad version or command.
        let (fixed, block) = v2(1, 0x11, &[1, 2, 3]);
        assert!(parse_v2(&fixed, &block).is_err());
        let (fixed, block) = v2(1, 0x11, &v4);
        assert!(parse_v2(&fixed, &block[..4]).is_err());
        let (mut fixed, _) = v2(1, 0x11, &v4);
        fixed[12] = 0x11;
        assert!(v2_block_len(&fixed).is_err());
        fixed[12] = 0x22;
        assert!(v2_block_len(&fixed).is_err());
        let (mut fixed, _) = v2(1, 0x11, &v4);
        fixed[14..].copy_from_slice(&2000u16.to_be_bytes());
        assert!(v2_block_len(&fixed).is_err());
    }

    #[test]
    fn anything_else_is_no_header() {
        assert_eq!(start(b"GET / HTTP/1.1\r\n"), Err(BadHeader::Missing));
        assert_eq!(
            start(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00"),
            Err(BadHeader::Missing)
        );
        assert_eq!(start(b"PROXY TCP4 1.2."), Ok(Start::V1));
    }
}
