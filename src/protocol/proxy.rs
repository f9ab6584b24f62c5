//! The PROXY protocol header, versions 1 and 2, as pure code.
//!
//! An operations feature (`--proxy-protocol`): leave it for later.
//!
//! A load balancer that relays TCP (HAProxy's `send-proxy`/`send-proxy-v2`,
//! and most cloud balancers) connects to the server itself, so the server's
//! socket names the balancer, not the client. The PROXY protocol fixes that:
//! before the first byte of the relayed stream the balancer sends one header
//! naming the client's and the server's addresses. Version 1 is one text line
//! (`PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n`), version 2 a binary
//! block that starts with a 12-byte signature no text protocol begins with.
//!
//! The rules this decoder follows are HAProxy's specification of the protocol:
//!
//! - A server configured for the protocol must read a valid header before it
//!   does anything else with the connection (greeter greets only after it),
//!   and must drop a connection whose header is missing or malformed. It must
//!   never guess whether a header is present, or anyone could claim any
//!   address; without `--proxy-protocol`, greeter never looks for one.
//! - A version 1 line ends with `\r\n` within 107 bytes; a lone `\n` does not
//!   end it. Numbers have no leading zeros, addresses match the family named.
//!   `UNKNOWN` means "use the connection's own addresses".
//! - A version 2 header is 16 bytes plus the length its bytes 15-16 give.
//!   The command LOCAL (a balancer's own health check) and families the
//!   server does not relay (UNSPEC, UNIX, UDP) also mean "use the
//!   connection's own addresses"; type-length-value extensions after the
//!   addresses are skipped.
//!
//! The specification designed both formats to fit in 536 bytes, the smallest
//! segment every TCP host must accept. Extensions can make a version 2
//! header longer; greeter refuses one longer than [`MAX_HEADER`] (its own
//! limit, the same 536 bytes) rather than buffer it: that bounds what a
//! connection may hold before it has even been greeted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest header accepted, in bytes (version 2 with its extensions).
pub const MAX_HEADER: usize = 536;
/// The longest version 1 line, `\r\n` included, that the specification allows.
const V1_MAX_LINE: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED_PART: usize = 16;

/// What the bytes received so far amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// They are the start of a header: more bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes; the relayed stream follows it. The
    /// addresses are `None` when the header says to use the connection's own
    /// (version 1 `UNKNOWN`; version 2 LOCAL or a family not relayed here).
    Header {
        len: usize,
        addresses: Option<ProxiedAddresses>,
    },
}

/// The relayed connection's endpoints, as the balancer saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxiedAddresses {
    /// The client that connected to the balancer.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// Why a connection's first bytes are not an acceptable header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// They start with neither version's signature.
    Missing,
    /// They start like a header but break one of its rules: which one.
    Malformed(&'static str),
    /// A version 1 line without `\r\n` in 107 bytes, or a version 2 header
    /// longer than [`MAX_HEADER`].
    TooLong,
    /// The peer closed the connection before the header was whole. (The
    /// shell sees the close; [`decode`] only ever sees bytes.)
    Truncated,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Missing => write!(f, "no PROXY protocol header"),
            ProxyError::Malformed(what) => write!(f, "malformed PROXY protocol header: {what}"),
            ProxyError::TooLong => write!(
                f,
                "PROXY protocol header too long (version 1 ends within {V1_MAX_LINE} bytes, \
                 version 2 is accepted up to {MAX_HEADER})"
            ),
            ProxyError::Truncated => write!(
                f,
                "PROXY protocol header cut short: the connection closed before it was whole"
            ),
        }
    }
}

/// Decodes the header at the start of `input`, the bytes a connection has
/// received so far. Call it again with more bytes after [`Decoded::Incomplete`].
pub fn decode(input: &[u8]) -> Result<Decoded, ProxyError> {
    if starts_like(input, V2_SIGNATURE) {
        decode_v2(input)
    } else if starts_like(input, V1_PREFIX) {
        decode_v1(input)
    } else {
        Err(ProxyError::Missing)
    }
}

/// Whether `input` and `prefix` agree on the bytes both have: `input` is
/// `prefix`'s start, or starts with all of it.
fn starts_like(input: &[u8], prefix: &[u8]) -> bool {
    let n = input.len().min(prefix.len());
    input[..n] == prefix[..n]
}

fn decode_v1(input: &[u8]) -> Result<Decoded, ProxyError> {
    let window = &input[..input.len().min(V1_MAX_LINE)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return if input.len() >= V1_MAX_LINE {
            Err(ProxyError::TooLong)
        } else {
            Ok(Decoded::Incomplete)
        };
    };
    let Some(line) = window[..newline].strip_suffix(b"\r") else {
        return Err(ProxyError::Malformed(
            "line ends with \\n alone, not \\r\\n",
        ));
    };
    let line =
        std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("line is not US-ASCII"))?;
    let mut fields = line.split(' ').skip(1);
    let family = fields.next().unwrap_or_default();
    let addresses = match family {
        "UNKNOWN" => None,
        "TCP4" | "TCP6" => Some(v1_addresses(family, &mut fields)?),
        _ => {
            return Err(ProxyError::Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    Ok(Decoded::Header {
        len: newline + 1,
        addresses,
    })
}

fn v1_addresses<'a>(
    family: &str,
    fields: &mut impl Iterator<Item = &'a str>,
) -> Result<ProxiedAddresses, ProxyError> {
    let (Some(source), Some(destination), Some(source_port), Some(destination_port), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::Malformed(
            "expected two addresses and two ports, each after one space",
        ));
    };
    let ip = |text: &str| -> Result<IpAddr, ProxyError> {
        let parsed = if family == "TCP4" {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        } else {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        };
        parsed.map_err(|_| ProxyError::Malformed("address does not match its family"))
    };
    Ok(ProxiedAddresses {
        source: SocketAddr::new(ip(source)?, v1_port(source_port)?),
        destination: SocketAddr::new(ip(destination)?, v1_port(destination_port)?),
    })
}

/// A port in decimal: digits only, no leading zero, at most 65535.
fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    match text.parse() {
        Ok(port) if digits_only && !leading_zero => Ok(port),
        _ => Err(ProxyError::Malformed(
            "port is not a decimal number 0-65535",
        )),
    }
}

fn decode_v2(input: &[u8]) -> Result<Decoded, ProxyError> {
    if input.len() < V2_FIXED_PART {
        return Ok(Decoded::Incomplete);
    }
    let (version, command) = (input[12] >> 4, input[12] & 0x0f);
    let (family, transport) = (input[13] >> 4, input[13] & 0x0f);
    let block_len = usize::from(u16::from_be_bytes([input[14], input[15]]));
    if version != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    if command > 1 {
        return Err(ProxyError::Malformed("command is neither LOCAL nor PROXY"));
    }
    if family > 3 || transport > 2 {
        return Err(ProxyError::Malformed("unknown address family or transport"));
    }
    let len = V2_FIXED_PART + block_len;
    if len > MAX_HEADER {
        return Err(ProxyError::TooLong);
    }
    let Some(block) = input.get(V2_FIXED_PART..len) else {
        return Ok(Decoded::Incomplete);
    };
    const LOCAL: u8 = 0;
    const STREAM: u8 = 1;
    let addresses = match (command, family, transport) {
        (LOCAL, _, _) => None,
        (_, 1, STREAM) => Some(
            v2_inet::<4>(block).ok_or(ProxyError::Malformed("address block too short for IPv4"))?,
        ),
        (_, 2, STREAM) => Some(
            v2_inet::<16>(block)
                .ok_or(ProxyError::Malformed("address block too short for IPv6"))?,
        ),
        // UNSPEC, UNIX and datagram families: the specification lets a
        // receiver that does not relay them use the connection's own
        // addresses.
        _ => None,
    };
    Ok(Decoded::Header { len, addresses })
}

/// The addresses of a TCP family whose addresses are `N` bytes long: source
/// and destination address, then source and destination port.
fn v2_inet<const N: usize>(block: &[u8]) -> Option<ProxiedAddresses>
where
    IpAddr: From<[u8; N]>,
{
    let (source, rest) = block.split_first_chunk::<N>()?;
    let (destination, rest) = rest.split_first_chunk::<N>()?;
    let ([s1, s2, d1, d2], _) = rest.split_first_chunk::<4>()?;
    Some(ProxiedAddresses {
        source: SocketAddr::new(IpAddr::from(*source), u16::from_be_bytes([*s1, *s2])),
        destination: SocketAddr::new(IpAddr::from(*destination), u16::from_be_bytes([*d1, *d2])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(input: &[u8]) -> (usize, Option<ProxiedAddresses>) {
        match decode(input) {
            Ok(Decoded::Header { len, addresses }) => (len, addresses),
            other => panic!("expected a whole header, got {other:?}"),
        }
    }

    fn addresses(source: &str, destination: &str) -> Option<ProxiedAddresses> {
        Some(ProxiedAddresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        })
    }

    /// The example line from the specification, before an HTTP request.
    #[test]
    fn the_specifications_v1_example_names_the_client() {
        let input = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
        let (len, got) = header(input);
        assert_eq!(&input[len..], b"GET / HTTP/1.1\r\n");
        assert_eq!(got, addresses("192.168.0.1:56324", "192.168.0.11:443"));
    }

    /// The specification's longest lines: each must be accepted whole.
    #[test]
    fn the_specifications_longest_v1_lines_are_accepted() {
        let v4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(v4.len(), 56);
        assert_eq!(
            header(v4),
            (
                56,
                addresses("255.255.255.255:65535", "255.255.255.255:65535")
            )
        );
        let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let v6 = format!("PROXY TCP6 {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(v6.len(), 104);
        let ends = format!("[{ffff}]:65535");
        assert_eq!(header(v6.as_bytes()), (104, addresses(&ends, &ends)));
        let unknown = format!("PROXY UNKNOWN {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(unknown.len(), 107);
        assert_eq!(header(unknown.as_bytes()), (107, None));
        assert_eq!(header(b"PROXY UNKNOWN\r\n"), (15, None));
    }

    /// Zero is a number without a leading zero: ports may be 0 to 65535.
    #[test]
    fn v1_ports_span_zero_to_65535() {
        let (_, got) = header(b"PROXY TCP4 0.0.0.0 10.0.0.1 0 65535\r\n");
        assert_eq!(got, addresses("0.0.0.0:0", "10.0.0.1:65535"));
    }

    #[test]
    fn a_v1_line_in_pieces_is_incomplete_until_its_crlf() {
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 6000\r\n";
        for end in 1..line.len() {
            assert_eq!(decode(&line[..end]), Ok(Decoded::Incomplete), "{end} bytes");
        }
        assert_eq!(
            header(line),
            (
                line.len(),
                addresses("[2001:db8::1]:40000", "[2001:db8::2]:6000")
            )
        );
    }

    #[test]
    fn a_v1_line_without_crlf_in_107_bytes_is_too_long() {
        let mut input = b"PROXY UNKNOWN ".to_vec();
        input.resize(106, b'x');
        assert_eq!(decode(&input), Ok(Decoded::Incomplete));
        input.push(b'x');
        assert_eq!(decode(&input), Err(ProxyError::TooLong));
    }

    #[test]
    fn v1_lines_that_break_a_rule_are_malformed() {
        let broken: &[&[u8]] = &[
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n",
            b"PROXY \r\n",
        ];
        for input in broken {
            assert!(
                matches!(decode(input), Err(ProxyError::Malformed(_))),
                "{:?} gave {:?}",
                String::from_utf8_lossy(input),
                decode(input)
            );
        }
    }

    #[test]
    fn anything_else_is_no_header_at_all() {
        for input in [
            &b"Michael\n"[..],
            b"PROXX",
            b"proxy TCP4",
            b"\r\n\r\n\0\r\nQUIT\r",
        ] {
            assert_eq!(decode(input), Err(ProxyError::Missing), "{input:?}");
        }
        assert_eq!(decode(b""), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"PROX"), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"\r\n\r\n"), Ok(Decoded::Incomplete));
    }

    fn v2(command: u8, family_transport: u8, block: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family_transport);
        header.extend_from_slice(&(block.len() as u16).to_be_bytes());
        header.extend_from_slice(block);
        header
    }

    /// What HAProxy's `send-proxy-v2` sent for a client at 172.19.0.1:42578
    /// relayed to 172.19.0.3:80, then the relayed bytes.
    #[test]
    fn a_v2_header_as_haproxy_sends_it_names_the_client() {
        let mut input = vec![
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11,
            0x00, 0x0c, 0xac, 0x13, 0x00, 0x01, 0xac, 0x13, 0x00, 0x03, 0xa6, 0x52, 0x00, 0x50,
        ];
        input.extend_from_slice(b"Michael\n");
        let (len, got) = header(&input);
        assert_eq!(len, 28);
        assert_eq!(&input[len..], b"Michael\n");
        assert_eq!(got, addresses("172.19.0.1:42578", "172.19.0.3:80"));
    }

    #[test]
    fn a_v2_ipv6_header_with_extensions_skips_them() {
        let mut block = Vec::new();
        block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&[0x9c, 0x40, 0x17, 0x70]);
        // PP2_TYPE_NOOP with three bytes of padding, then a unique id.
        block.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0, 0x05, 0x00, 0x02, 0xab, 0xcd]);
        let input = v2(1, 0x21, &block);
        assert_eq!(
            header(&input),
            (
                input.len(),
                addresses("[2001:db8::1]:40000", "[2001:db8::2]:6000")
            )
        );
    }

    #[test]
    fn a_v2_header_in_pieces_is_incomplete_until_its_last_byte() {
        let input = v2(1, 0x11, &[127, 0, 0, 1, 127, 0, 0, 2, 0, 1, 0, 2]);
        for end in 0..input.len() {
            assert_eq!(
                decode(&input[..end]),
                Ok(Decoded::Incomplete),
                "{end} bytes"
            );
        }
        assert_eq!(
            header(&input),
            (28, addresses("127.0.0.1:1", "127.0.0.2:2"))
        );
    }

    #[test]
    fn v2_local_and_unrelayed_families_use_the_connections_own_addresses() {
        let health_check = v2(0, 0x00, &[]);
        assert_eq!(header(&health_check), (16, None));
        // LOCAL ignores whatever address block comes with it.
        let local_with_block = v2(0, 0x11, &[1; 12]);
        assert_eq!(header(&local_with_block), (28, None));
        for family_transport in [0x00, 0x12, 0x22, 0x31, 0x32] {
            let input = v2(1, family_transport, &[0; 216]);
            assert_eq!(header(&input), (232, None), "{family_transport:#x}");
        }
    }

    #[test]
    fn v2_headers_that_break_a_rule_are_refused() {
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        let cases = [
            (wrong_version, "version"),
            (v2(2, 0x11, &[0; 12]), "command"),
            (v2(1, 0x41, &[0; 12]), "family"),
            (v2(1, 0x13, &[0; 12]), "transport"),
            (v2(1, 0x11, &[0; 11]), "short IPv4 block"),
            (v2(1, 0x21, &[0; 35]), "short IPv6 block"),
        ];
        for (input, what) in cases {
            assert!(
                matches!(decode(&input), Err(ProxyError::Malformed(_))),
                "{what}: {:?}",
                decode(&input)
            );
        }
    }

    #[test]
    fn a_v2_header_longer_than_the_limit_is_refused_before_it_arrives() {
        let longest = v2(1, 0x11, &[0; MAX_HEADER - V2_FIXED_PART]);
        assert_eq!(header(&longest).0, MAX_HEADER);
        let too_long = v2(1, 0x11, &[0; MAX_HEADER - V2_FIXED_PART + 1]);
        assert_eq!(decode(&too_long[..V2_FIXED_PART]), Err(ProxyError::TooLong));
    }

    #[test]
    fn errors_say_what_was_wrong() {
        assert_eq!(ProxyError::Missing.to_string(), "no PROXY protocol header");
        assert_eq!(
            ProxyError::Malformed("version is not 2").to_string(),
            "malformed PROXY protocol header: version is not 2"
        );
        assert!(ProxyError::TooLong.to_string().contains("107 bytes"));
    }
}
