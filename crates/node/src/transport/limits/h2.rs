//! Where a client is in sending a request's headers, read off the bytes a server receives.
//! hyper times out HTTP/1.1 headers itself (tonic's peer port at its own 30 s), but not
//! HTTP/2's: a client may open a HEADERS frame and trickle it, or never send one. For HTTP/2
//! [`HeaderScan`] follows the frame headers (payloads are skipped) and says when each header
//! block starts and ends; for HTTP/1.1 only when the first request's headers end (the blank
//! line), after which hyper's timer rules. The connection's watcher
//! ([`super::conns::Watched`]) closes a client that takes longer than `limits.header_timeout`.

/// The client connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// What the scan is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The preface, this many bytes of it matched so far.
    Preface(usize),
    /// A frame header, this many bytes of it read so far.
    Header(usize),
    /// A frame's payload, this many bytes still to skip.
    Payload(u32),
    /// HTTP/1.1 before the end of its first request's headers: this many bytes of the blank
    /// line (`\r\n\r\n`) matched so far.
    Http1(usize),
    /// Nothing more to watch (HTTP/1.1 past its first request's headers).
    Done,
}

#[derive(Debug, Clone)]
pub struct HeaderScan {
    part: Part,
    header: [u8; FRAME_HEADER],
    /// Whether a header block is open: started, its END_HEADERS frame not yet wholly read.
    open: bool,
    /// Whether the frame being read ends the open header block.
    ending: bool,
}

impl Default for HeaderScan {
    fn default() -> Self {
        Self {
            part: Part::Preface(0),
            header: [0; FRAME_HEADER],
            open: false,
            ending: false,
        }
    }
}

impl HeaderScan {
    /// Whether there is still anything to watch (HTTP/2, or HTTP/1.1 before its first
    /// request's headers ended).
    pub fn watching(&self) -> bool {
        self.part != Part::Done
    }

    /// Whether a header block has started and not ended.
    pub fn in_headers(&self) -> bool {
        self.open
    }

    /// Reads `bytes`, the next the client sent; how many header blocks ended in them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut ended = 0;
        while !bytes.is_empty() {
            match self.part {
                Part::Done => return ended,
                Part::Http1(matched) => {
                    let (part, rest) = blank_line(matched, bytes);
                    self.part = part;
                    if part == Part::Done {
                        self.open = false;
                        ended += 1;
                    }
                    bytes = rest;
                }
                Part::Preface(matched) => {
                    let n = bytes.len().min(PREFACE.len() - matched);
                    if bytes[..n] != PREFACE[matched..matched + n] {
                        // HTTP/1.1: its request has begun.
                        self.part = Part::Http1(0);
                        self.open = true;
                        continue;
                    }
                    bytes = &bytes[n..];
                    let matched = matched + n;
                    self.part = if matched == PREFACE.len() {
                        Part::Header(0)
                    } else {
                        Part::Preface(matched)
                    };
                }
                Part::Header(got) => {
                    let n = bytes.len().min(FRAME_HEADER - got);
                    self.header[got..got + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if got + n < FRAME_HEADER {
                        self.part = Part::Header(got + n);
                        continue;
                    }
                    self.frame_started();
                    if let Part::Payload(0) = self.part {
                        ended += usize::from(self.frame_done());
                    }
                }
                Part::Payload(left) => {
                    let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX).min(left);
                    bytes = &bytes[n as usize..];
                    self.part = Part::Payload(left - n);
                    if left == n {
                        ended += usize::from(self.frame_done());
                    }
                }
            }
        }
        ended
    }

    /// A whole frame header was read.
    fn frame_started(&mut self) {
        let [l0, l1, l2, kind, flags, ..] = self.header;
        let length = u32::from_be_bytes([0, l0, l1, l2]);
        let starts = matches!(kind, HEADERS | PUSH_PROMISE);
        if starts || (kind == CONTINUATION && self.open) {
            self.open = true;
            self.ending = flags & END_HEADERS != 0;
        } else {
            self.ending = false;
        }
        self.part = Part::Payload(length);
    }

    /// A frame was wholly read; true if it ended a header block.
    fn frame_done(&mut self) -> bool {
        self.part = Part::Header(0);
        if self.open && self.ending {
            self.open = false;
            self.ending = false;
            return true;
        }
        false
    }
}

/// Looks for the blank line ending HTTP/1.1 headers in `bytes`, `matched` bytes of it already
/// seen: where the scan is after them, and what is left of `bytes`.
fn blank_line(mut matched: usize, bytes: &[u8]) -> (Part, &[u8]) {
    const BLANK: &[u8; 4] = b"\r\n\r\n";
    for (i, &b) in bytes.iter().enumerate() {
        matched = if b == BLANK[matched] {
            matched + 1
        } else if b == b'\r' {
            1
        } else {
            0
        };
        if matched == BLANK.len() {
            return (Part::Done, &bytes[i + 1..]);
        }
    }
    (Part::Http1(matched), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_header_block_opens_and_ends_byte_by_byte_or_whole() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, &[0; 6])); // SETTINGS
        let start = bytes.len();
        bytes.extend(frame(HEADERS, 0, &[1; 10]));
        let continuation = bytes.len();
        bytes.extend(frame(CONTINUATION, END_HEADERS, &[2; 5]));
        let end = bytes.len();
        bytes.extend(frame(0x0, 0, &[3; 100])); // DATA
        let mut whole = HeaderScan::default();
        assert_eq!(whole.feed(&bytes), 1);
        assert!(!whole.in_headers() && whole.watching());
        let mut trickled = HeaderScan::default();
        for (i, b) in bytes.iter().enumerate() {
            let ended = trickled.feed(std::slice::from_ref(b));
            assert_eq!(ended, usize::from(i + 1 == end), "byte {i}");
            let open = i >= start + FRAME_HEADER - 1 && i + 1 < end;
            assert_eq!(trickled.in_headers(), open, "byte {i}");
        }
        assert!(continuation > start);
    }

    #[test]
    fn http1_is_watched_until_its_first_headers_end() {
        let mut scan = HeaderScan::default();
        assert_eq!(scan.feed(b"GET / HTTP/1.1\r\nHost: x\r"), 0);
        assert!(scan.watching() && scan.in_headers());
        assert_eq!(scan.feed(b"\n\r"), 0);
        assert_eq!(scan.feed(b"\nbody"), 1);
        assert!(!scan.watching() && !scan.in_headers());
        assert_eq!(scan.feed(b"GET / HTTP/1.1\r\n"), 0, "hyper's from here");
    }

    #[test]
    fn an_empty_headers_frame_with_end_headers_ends_at_once() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, END_HEADERS, &[]));
        let mut scan = HeaderScan::default();
        assert_eq!(scan.feed(&bytes), 1);
        assert!(!scan.in_headers());
    }
}
