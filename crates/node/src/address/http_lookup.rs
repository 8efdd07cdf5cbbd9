//! The HTTP fallback for when no STUN server answers (UDP blocked): services such as
//! `https://api.ipify.org` that answer with the caller's address as plain text. The body is
//! untrusted: it is read up to a small bound and must be exactly one IP address.

use std::net::IpAddr;
use std::time::Duration;

/// Longest body accepted. An IPv6 address with spaces and a newline is under 64 bytes; a
/// service that sends more is not answering what we asked (an HTML page, an error).
pub const MAX_BODY_BYTES: usize = 256;

/// Redirects followed; services move between hosts, but a chain is a misconfiguration.
const MAX_REDIRECTS: usize = 3;

/// How much of a bad body an error repeats.
const SHOWN_BODY_CHARS: usize = 40;

/// Why a lookup service's body was not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// More than [`MAX_BODY_BYTES`].
    #[error("body longer than {MAX_BODY_BYTES} bytes")]
    TooLong,
    /// Not UTF-8 text.
    #[error("body is not UTF-8 text")]
    NotText,
    /// Only whitespace.
    #[error("body is empty")]
    Empty,
    /// Text that is not one IP address (several, a page, a message).
    #[error("body {0:?} is not exactly one IP address")]
    NotAnAddress(String),
    /// An address nobody can dial.
    #[error("address {0} is unspecified, multicast or broadcast")]
    Undialable(IpAddr),
}

/// Why one lookup service gave us no address.
#[derive(Debug, thiserror::Error)]
pub enum HttpLookupError {
    /// The binary did not install a rustls crypto provider; reqwest would panic without one.
    #[error("no TLS crypto provider installed (the binary must install ring at start)")]
    NoCryptoProvider,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    /// Connecting, sending or reading failed, or the timeout passed.
    #[error("request to {url} failed: {source}")]
    Request { url: String, source: reqwest::Error },
    /// The service answered with a non-success status.
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// The body was not an address.
    #[error("{url}: {source}")]
    Body { url: String, source: BodyError },
}

/// The client used for all lookups of one discovery.
pub fn client(timeout: Duration) -> Result<reqwest::Client, HttpLookupError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        return Err(HttpLookupError::NoCryptoProvider);
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        // Through a proxy the service would see the proxy's address, not ours.
        .no_proxy()
        .build()
        .map_err(HttpLookupError::Client)
}

/// Asks `url` for our address.
pub async fn lookup(client: &reqwest::Client, url: &str) -> Result<IpAddr, HttpLookupError> {
    let request_failed = |source| HttpLookupError::Request {
        url: url.to_owned(),
        source,
    };
    let bad_body = |source| HttpLookupError::Body {
        url: url.to_owned(),
        source,
    };
    let mut response = client.get(url).send().await.map_err(request_failed)?;
    if !response.status().is_success() {
        return Err(HttpLookupError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
    {
        return Err(bad_body(BodyError::TooLong));
    }
    // Read chunk by chunk so a service that streams forever costs at most the bound.
    let mut body = Vec::with_capacity(64);
    while let Some(chunk) = response.chunk().await.map_err(request_failed)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(bad_body(BodyError::TooLong));
        }
        body.extend_from_slice(&chunk);
    }
    parse_lookup_body(&body).map_err(bad_body)
}

/// The address in a lookup service's body: exactly one IP address, surrounding whitespace
/// allowed.
pub fn parse_lookup_body(body: &[u8]) -> Result<IpAddr, BodyError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BodyError::TooLong);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| BodyError::NotText)?
        .trim();
    if text.is_empty() {
        return Err(BodyError::Empty);
    }
    let ip: IpAddr = text
        .parse()
        .map_err(|_| BodyError::NotAnAddress(text.chars().take(SHOWN_BODY_CHARS).collect()))?;
    let undialable = ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if undialable {
        return Err(BodyError::Undialable(ip));
    }
    Ok(ip)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A canned answer of the fake lookup service.
    #[derive(Debug, Clone)]
    pub(crate) struct Canned {
        pub path: &'static str,
        pub status: u16,
        pub body: Vec<u8>,
        /// Send Content-Length; without it the body ends when the connection closes.
        pub with_length: bool,
        /// Keep the connection open after the body, like a service that streams forever.
        pub hold_open: bool,
    }

    pub(crate) fn ok(path: &'static str, body: &str) -> Canned {
        Canned {
            path,
            status: 200,
            body: body.as_bytes().to_vec(),
            with_length: true,
            hold_open: false,
        }
    }

    pub(crate) fn install_crypto() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    /// A minimal HTTP/1.1 server on 127.0.0.1 answering each path with its canned reply
    /// (404 for others), one request per connection.
    pub(crate) async fn spawn_http(routes: Vec<Canned>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split_whitespace().nth(1).unwrap_or("/");
                    let canned =
                        routes
                            .iter()
                            .find(|r| r.path == path)
                            .cloned()
                            .unwrap_or(Canned {
                                path: "",
                                status: 404,
                                body: b"no".to_vec(),
                                with_length: true,
                                hold_open: false,
                            });
                    let mut reply =
                        format!("HTTP/1.1 {} X\r\nConnection: close\r\n", canned.status);
                    if canned.with_length {
                        reply.push_str(&format!("Content-Length: {}\r\n", canned.body.len()));
                    }
                    reply.push_str("\r\n");
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.write_all(&canned.body).await;
                    if canned.hold_open {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        addr
    }

    #[test]
    fn body_must_be_exactly_one_address() {
        assert_eq!(
            parse_lookup_body(b"203.0.113.5"),
            Ok("203.0.113.5".parse().expect("ip"))
        );
        assert_eq!(
            parse_lookup_body(b"  2001:db8::5\r\n"),
            Ok("2001:db8::5".parse().expect("ip"))
        );
        assert_eq!(parse_lookup_body(b""), Err(BodyError::Empty));
        assert_eq!(parse_lookup_body(b" \n\t"), Err(BodyError::Empty));
        assert_eq!(
            parse_lookup_body(&[0xff, 0xfe, b'1']),
            Err(BodyError::NotText)
        );
        assert_eq!(parse_lookup_body(&[b'1'; 257]), Err(BodyError::TooLong));
        assert_eq!(
            parse_lookup_body(b"0.0.0.0"),
            Err(BodyError::Undialable("0.0.0.0".parse().expect("ip")))
        );
        for bad in [
            "1.2.3.4 5.6.7.8",
            "<html>1.2.3.4</html>",
            "ip=1.2.3.4",
            "1.2.3.4:80",
            "1.2.3",
        ] {
            assert!(
                matches!(
                    parse_lookup_body(bad.as_bytes()),
                    Err(BodyError::NotAnAddress(_))
                ),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn looks_up_from_a_local_service() {
        install_crypto();
        let server = spawn_http(vec![
            ok("/v4", "198.51.100.23\n"),
            ok("/v6", "2001:db8::23"),
            Canned {
                with_length: false,
                ..ok("/nolen", "127.0.0.1")
            },
        ])
        .await;
        let client = client(Duration::from_secs(3)).expect("client");
        for (path, expected) in [
            ("/v4", "198.51.100.23"),
            ("/v6", "2001:db8::23"),
            ("/nolen", "127.0.0.1"),
        ] {
            let ip = lookup(&client, &format!("http://{server}{path}"))
                .await
                .expect(path);
            assert_eq!(ip.to_string(), expected);
        }
    }

    #[tokio::test]
    async fn refuses_bad_answers_with_a_reason() {
        install_crypto();
        let huge = "9".repeat(MAX_BODY_BYTES + 1);
        let server = spawn_http(vec![
            ok("/page", "<html><body>Your IP: 1.2.3.4</body></html>"),
            ok("/empty", ""),
            ok("/huge", &huge),
            // Without the bound while reading, this would wait for the timeout instead.
            Canned {
                with_length: false,
                hold_open: true,
                ..ok("/huge-stream", &huge.repeat(100))
            },
            Canned {
                status: 500,
                ..ok("/error", "1.2.3.4")
            },
        ])
        .await;
        let client = client(Duration::from_secs(3)).expect("client");
        let url = |path: &str| format!("http://{server}{path}");
        let check = |result: Result<IpAddr, HttpLookupError>, want: &str| {
            let err = result.expect_err(want);
            assert!(err.to_string().contains(want), "{err} should say {want}");
        };
        check(
            lookup(&client, &url("/page")).await,
            "not exactly one IP address",
        );
        check(lookup(&client, &url("/empty")).await, "empty");
        check(lookup(&client, &url("/huge")).await, "longer than 256");
        check(
            lookup(&client, &url("/huge-stream")).await,
            "longer than 256",
        );
        check(lookup(&client, &url("/error")).await, "HTTP 500");
        check(lookup(&client, &url("/missing")).await, "HTTP 404");
    }

    #[tokio::test]
    async fn closed_port_is_a_request_error() {
        install_crypto();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound");
        drop(listener);
        let client = client(Duration::from_secs(3)).expect("client");
        let err = lookup(&client, &format!("http://{addr}/"))
            .await
            .expect_err("closed");
        assert!(matches!(err, HttpLookupError::Request { .. }), "{err}");
    }
}
