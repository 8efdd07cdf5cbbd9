//! The STUN Binding codec (RFC 5389, RFC 8489): the 20-byte request we send and the parser of
//! the answer. Only what finding our mapped address needs is here; no authentication, no
//! FINGERPRINT check (the transaction id already ties a response to our request). Parsing is
//! a pure function over untrusted bytes: every length is checked before it is used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bytes of the fixed STUN header.
pub const HEADER_LEN: usize = 20;
/// Bytes of a transaction id.
pub const TXID_LEN: usize = 12;
/// The fixed value that marks an RFC 5389 message (and keys the XOR of addresses).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// A transaction id: random per request, echoed by the server.
pub type TransactionId = [u8; TXID_LEN];

/// Binding method, class request.
const BINDING_REQUEST: u16 = 0x0001;
/// Binding method, class success response.
const BINDING_SUCCESS: u16 = 0x0101;
/// Binding method, class error response.
const BINDING_ERROR: u16 = 0x0111;

const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// XOR-MAPPED-ADDRESS as numbered by pre-RFC drafts; some deployed servers still send it.
const ATTR_XOR_MAPPED_ADDRESS_OLD: u16 = 0x8020;

const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// Why a datagram is not the answer to our Binding request. The client ignores the datagram
/// and keeps waiting; the variant only says why in the counters and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Fewer bytes than a STUN header.
    #[error("datagram of {0} bytes is shorter than a STUN header")]
    TooShort(usize),
    /// The first two bits were not zero, so it is not STUN at all.
    #[error("not a STUN message (leading bits set)")]
    NotStun,
    /// The header's length field disagrees with the datagram or is not a multiple of 4.
    #[error("STUN length field {declared} does not fit a datagram of {actual} bytes")]
    BadLength { declared: usize, actual: usize },
    /// The magic cookie was wrong.
    #[error("wrong magic cookie {0:#010x}")]
    WrongCookie(u32),
    /// The transaction id was not the one of our request (late, spoofed or for someone else).
    #[error("wrong transaction id")]
    WrongTransaction,
    /// The server answered with a Binding error response.
    #[error("server refused the request with error {0}")]
    ErrorResponse(u16),
    /// A message of another method or class (a request, an indication, ...).
    #[error("unexpected message type {0:#06x}, expected a binding success response")]
    UnexpectedType(u16),
    /// An attribute's length runs past the end of the message.
    #[error("attribute {attr:#06x} is truncated")]
    TruncatedAttribute { attr: u16 },
    /// A (XOR-)MAPPED-ADDRESS with a bad family, length, port 0 or unspecified address.
    #[error("malformed address in attribute {attr:#06x}")]
    MalformedAddress { attr: u16 },
    /// A success response without any mapped address.
    #[error("success response has no (XOR-)MAPPED-ADDRESS")]
    NoMappedAddress,
}

/// The Binding request with transaction id `txid` (no attributes).
pub fn binding_request(txid: &TransactionId) -> [u8; HEADER_LEN] {
    let mut msg = [0u8; HEADER_LEN];
    msg[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Length 0: no attributes.
    msg[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    msg[8..].copy_from_slice(txid);
    msg
}

/// Checks that `bytes` is a Binding success response to the request `expected_txid` and
/// returns the address the server saw us from. XOR-MAPPED-ADDRESS is preferred; plain
/// MAPPED-ADDRESS is accepted from servers that predate it (RFC 3489).
pub fn parse_binding_response(
    bytes: &[u8],
    expected_txid: &TransactionId,
) -> Result<SocketAddr, StunError> {
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or(StunError::TooShort(bytes.len()))?;
    let msg_type = u16::from_be_bytes([header[0], header[1]]);
    if msg_type & 0xC000 != 0 {
        return Err(StunError::NotStun);
    }
    let declared = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if declared % 4 != 0 || HEADER_LEN + declared != bytes.len() {
        return Err(StunError::BadLength {
            declared,
            actual: bytes.len(),
        });
    }
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if cookie != MAGIC_COOKIE {
        return Err(StunError::WrongCookie(cookie));
    }
    if header[8..HEADER_LEN] != expected_txid[..] {
        return Err(StunError::WrongTransaction);
    }
    let body = &bytes[HEADER_LEN..];
    match msg_type {
        BINDING_SUCCESS => mapped_address(body, expected_txid),
        BINDING_ERROR => Err(StunError::ErrorResponse(error_code(body))),
        other => Err(StunError::UnexpectedType(other)),
    }
}

/// Walks the attributes and decodes the best mapped address. Unknown attributes are skipped
/// even in the comprehension-required range: RFC 3489 servers send SOURCE-ADDRESS and
/// CHANGED-ADDRESS there, and refusing them would lose the old servers we want to support.
fn mapped_address(body: &[u8], txid: &TransactionId) -> Result<SocketAddr, StunError> {
    let mut xor_mapped = None;
    let mut mapped = None;
    for attr in attributes(body) {
        let (kind, value) = attr?;
        match kind {
            ATTR_XOR_MAPPED_ADDRESS | ATTR_XOR_MAPPED_ADDRESS_OLD if xor_mapped.is_none() => {
                xor_mapped = Some(decode_address(kind, value, Some(txid))?);
            }
            ATTR_MAPPED_ADDRESS if mapped.is_none() => {
                mapped = Some(decode_address(kind, value, None)?);
            }
            // Anything after an integrity attribute is not covered by it, and RFC 8489 says to
            // ignore it; we have no key, but an attacker-appended address is still suspect.
            ATTR_MESSAGE_INTEGRITY | ATTR_MESSAGE_INTEGRITY_SHA256 => break,
            _ => {}
        }
    }
    xor_mapped.or(mapped).ok_or(StunError::NoMappedAddress)
}

/// The ERROR-CODE of an error response (class * 100 + number), 0 if absent or unreadable.
fn error_code(body: &[u8]) -> u16 {
    attributes(body)
        .map_while(Result::ok)
        .find(|(kind, _)| *kind == ATTR_ERROR_CODE)
        .and_then(|(_, v)| Some(u16::from(*v.get(2)? & 0x07) * 100 + u16::from(*v.get(3)?)))
        .unwrap_or(0)
}

/// Iterates `(type, value)` over a message body; yields an error and stops at the first
/// attribute whose value would run past the end.
fn attributes(body: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), StunError>> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(&[t0, t1, l0, l1]) = rest.get(..4) else {
            rest = &[];
            return Some(Err(StunError::TruncatedAttribute { attr: 0 }));
        };
        let kind = u16::from_be_bytes([t0, t1]);
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let Some(value) = rest.get(4..4 + len) else {
            rest = &[];
            return Some(Err(StunError::TruncatedAttribute { attr: kind }));
        };
        // Values are padded to 4 bytes; a last attribute whose padding was left off is
        // tolerated since the value itself is complete.
        let padded = (4 + len).next_multiple_of(4);
        rest = rest.get(padded..).unwrap_or(&[]);
        Some(Ok((kind, value)))
    })
}

/// Decodes a MAPPED-ADDRESS value, or an XOR-MAPPED-ADDRESS one when `xor_txid` is given.
fn decode_address(
    attr: u16,
    value: &[u8],
    xor_txid: Option<&TransactionId>,
) -> Result<SocketAddr, StunError> {
    let malformed = StunError::MalformedAddress { attr };
    let (&family, rest) = value
        .get(1..)
        .and_then(<[u8]>::split_first)
        .ok_or(malformed.clone())?;
    let port_bytes: [u8; 2] = rest
        .get(..2)
        .and_then(|p| p.try_into().ok())
        .ok_or(malformed.clone())?;
    let addr_bytes = &rest[2..];
    let cookie = MAGIC_COOKIE.to_be_bytes();
    // The XOR key is the cookie followed by the transaction id (RFC 8489 section 14.2).
    let mut key = [0u8; 16];
    if let Some(txid) = xor_txid {
        key[..4].copy_from_slice(&cookie);
        key[4..].copy_from_slice(txid);
    }
    let port = u16::from_be_bytes([port_bytes[0] ^ key[0], port_bytes[1] ^ key[1]]);
    let ip = match (family, addr_bytes.len()) {
        (FAMILY_V4, 4) => {
            let mut o = [0u8; 4];
            o.iter_mut()
                .zip(addr_bytes)
                .zip(&key)
                .for_each(|((o, a), k)| *o = a ^ k);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (FAMILY_V6, 16) => {
            let mut o = [0u8; 16];
            o.iter_mut()
                .zip(addr_bytes)
                .zip(&key)
                .for_each(|((o, a), k)| *o = a ^ k);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err(malformed),
    };
    if port == 0 || ip.is_unspecified() {
        return Err(malformed);
    }
    Ok(SocketAddr::new(ip, port))
}

/// Encodes a Binding success response, as the fake STUN servers of the tests answer.
#[cfg(test)]
pub(crate) fn encode_success(txid: &TransactionId, mapped: SocketAddr, xor: bool) -> Vec<u8> {
    let mut key = [0u8; 16];
    if xor {
        key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        key[4..].copy_from_slice(txid);
    }
    let port = mapped.port().to_be_bytes();
    let mut value = vec![0, 0, port[0] ^ key[0], port[1] ^ key[1]];
    match mapped.ip() {
        IpAddr::V4(v4) => {
            value[1] = FAMILY_V4;
            value.extend(v4.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        }
        IpAddr::V6(v6) => {
            value[1] = FAMILY_V6;
            value.extend(v6.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        }
    }
    let kind = if xor {
        ATTR_XOR_MAPPED_ADDRESS
    } else {
        ATTR_MAPPED_ADDRESS
    };
    let mut msg = binding_request(txid).to_vec();
    msg[0..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
    msg.extend_from_slice(&kind.to_be_bytes());
    msg.extend_from_slice(&(value.len() as u16).to_be_bytes());
    msg.extend_from_slice(&value);
    let body_len = (msg.len() - HEADER_LEN) as u16;
    msg[2..4].copy_from_slice(&body_len.to_be_bytes());
    msg
}

/// The transaction id of a request, if `bytes` is a well-formed Binding request.
#[cfg(test)]
pub(crate) fn request_txid(bytes: &[u8]) -> Option<TransactionId> {
    let is_request = bytes.len() >= HEADER_LEN
        && bytes[0..2] == BINDING_REQUEST.to_be_bytes()
        && bytes[4..8] == MAGIC_COOKIE.to_be_bytes();
    is_request
        .then(|| bytes[8..HEADER_LEN].try_into().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TXID: TransactionId = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn sock(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    /// RFC 5769 section 2.2: the sample IPv4 response, with its XOR-MAPPED-ADDRESS
    /// 192.0.2.1:32853 (SOFTWARE, MESSAGE-INTEGRITY and FINGERPRINT included).
    const RFC5769_V4: &str = concat!(
        "0101003c2112a442b7e7a701bc34d686fa87dfae",
        "8022000b7465737420766563746f7220",
        "002000080001a147e112a643",
        "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7",
        "80280004c07d4c96",
    );
    const RFC5769_TXID: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    #[test]
    fn request_is_twenty_bytes_with_cookie_and_txid() {
        let req = binding_request(&TXID);
        assert_eq!(&req[..4], &[0x00, 0x01, 0x00, 0x00]);
        assert_eq!(&req[4..8], &[0x21, 0x12, 0xA4, 0x42]);
        assert_eq!(&req[8..], &TXID);
        assert_eq!(request_txid(&req), Some(TXID));
    }

    #[test]
    fn parses_the_rfc5769_sample_response() {
        let bytes = hex::decode(RFC5769_V4).expect("valid hex");
        assert_eq!(
            parse_binding_response(&bytes, &RFC5769_TXID),
            Ok(sock("192.0.2.1:32853"))
        );
    }

    #[test]
    fn round_trips_xor_and_plain_for_both_families() {
        for addr in [
            "127.0.0.1:5001",
            "203.0.113.9:65535",
            "[2001:db8::1]:1",
            "[::1]:40000",
        ] {
            for xor in [true, false] {
                let msg = encode_success(&TXID, sock(addr), xor);
                assert_eq!(
                    parse_binding_response(&msg, &TXID),
                    Ok(sock(addr)),
                    "{addr} {xor}"
                );
            }
        }
    }

    #[test]
    fn prefers_xor_mapped_over_mapped() {
        let mut msg = encode_success(&TXID, sock("10.0.0.1:1000"), false);
        let xor = encode_success(&TXID, sock("81.2.69.1:2000"), true);
        msg.extend_from_slice(&xor[HEADER_LEN..]);
        let len = (msg.len() - HEADER_LEN) as u16;
        msg[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            parse_binding_response(&msg, &TXID),
            Ok(sock("81.2.69.1:2000"))
        );
    }

    #[test]
    fn refuses_what_is_not_our_answer() {
        let good = encode_success(&TXID, sock("127.0.0.1:9"), true);
        let other_txid = [9u8; 12];
        assert_eq!(
            parse_binding_response(&good, &other_txid),
            Err(StunError::WrongTransaction)
        );
        assert_eq!(
            parse_binding_response(&good[..19], &TXID),
            Err(StunError::TooShort(19))
        );
        assert!(matches!(
            parse_binding_response(&good[..good.len() - 4], &TXID),
            Err(StunError::BadLength { .. })
        ));

        let mut request_class = good.clone();
        request_class[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
        assert_eq!(
            parse_binding_response(&request_class, &TXID),
            Err(StunError::UnexpectedType(BINDING_REQUEST))
        );

        let mut cookie = good.clone();
        cookie[4] ^= 0xff;
        assert!(matches!(
            parse_binding_response(&cookie, &TXID),
            Err(StunError::WrongCookie(_))
        ));

        let mut not_stun = good.clone();
        not_stun[0] |= 0x80;
        assert_eq!(
            parse_binding_response(&not_stun, &TXID),
            Err(StunError::NotStun)
        );

        let mut bad_family = good.clone();
        bad_family[HEADER_LEN + 5] = 0x03;
        assert!(matches!(
            parse_binding_response(&bad_family, &TXID),
            Err(StunError::MalformedAddress { .. })
        ));

        let mut long_attr = good.clone();
        long_attr[HEADER_LEN + 3] = 0x40;
        assert!(matches!(
            parse_binding_response(&long_attr, &TXID),
            Err(StunError::TruncatedAttribute { .. })
        ));

        let mut empty = binding_request(&TXID).to_vec();
        empty[0..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
        assert_eq!(
            parse_binding_response(&empty, &TXID),
            Err(StunError::NoMappedAddress)
        );
    }

    #[test]
    fn reads_the_error_code_of_an_error_response() {
        let mut msg = binding_request(&TXID).to_vec();
        msg[0..2].copy_from_slice(&BINDING_ERROR.to_be_bytes());
        msg.extend_from_slice(&[0x00, 0x09, 0x00, 0x04, 0x00, 0x00, 0x04, 0x00]);
        msg[2..4].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(
            parse_binding_response(&msg, &TXID),
            Err(StunError::ErrorResponse(400))
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_binding_response(&bytes, &TXID);
        }

        #[test]
        fn random_bytes_after_a_valid_header_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            // A header that passes every check, so the fuzzing reaches the attribute walker.
            let mut msg = binding_request(&TXID).to_vec();
            msg[0..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
            let len = body.len() - body.len() % 4;
            msg.extend_from_slice(&body[..len]);
            msg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            let _ = parse_binding_response(&msg, &TXID);
        }

        #[test]
        fn mutated_valid_responses_never_panic(
            v6 in any::<bool>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            cut_it in any::<bool>(),
        ) {
            let mapped = if v6 { sock("[2001:db8::5]:7") } else { sock("198.51.100.5:7") };
            let mut msg = encode_success(&TXID, mapped, true);
            for (at, value) in flips {
                let i = at.index(msg.len());
                msg[i] = value;
            }
            if cut_it {
                msg.truncate(cut.index(msg.len() + 1));
            }
            let _ = parse_binding_response(&msg, &TXID);
        }
    }
}
