//! Can a peer reach us at the address we are about to advertise? We try what a peer would do:
//! open a TCP connection to our own peer port on the external address. Success proves the
//! path works; failure is either a NAT that does not forward the port or one that does not
//! hairpin (loop our own traffic back), and either way peers outside may not get in.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::external::ExternalHost;
use super::interfaces::PreferredFamily;

/// Why the self-connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReachabilityError {
    /// A host name override did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    /// The connection was refused or failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    /// No answer within the timeout (typical of a NAT that drops unsolicited packets).
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

/// Connects to `host:port` and closes again, within `timeout` (name resolution included).
pub async fn check_reachable(
    host: &ExternalHost,
    port: u16,
    preferred: PreferredFamily,
    timeout: Duration,
) -> Result<SocketAddr, ReachabilityError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let addr = match host {
        ExternalHost::Ip(ip) => SocketAddr::new(*ip, port),
        ExternalHost::Name(name) => {
            let fail = |source| ReachabilityError::Resolve {
                host: name.clone(),
                source,
            };
            let resolved =
                tokio::time::timeout_at(deadline, tokio::net::lookup_host((name.as_str(), port)))
                    .await
                    .map_err(|_| fail(io::ErrorKind::TimedOut.into()))?
                    .map_err(fail)?
                    .collect::<Vec<_>>();
            let first = resolved
                .iter()
                .find(|a| preferred.matches(a.ip()))
                .or(resolved.first());
            *first.ok_or_else(|| fail(io::ErrorKind::NotFound.into()))?
        }
    };
    match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Ok(addr),
        Ok(Err(source)) => Err(ReachabilityError::Connect { addr, source }),
        Err(_) => Err(ReachabilityError::Timeout { addr, timeout }),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use tokio::net::TcpListener;

    use super::*;

    const LOCALHOST: ExternalHost = ExternalHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    const TIMEOUT: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn a_listening_port_is_reachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("bound").port();
        let addr = check_reachable(&LOCALHOST, port, PreferredFamily::V4, TIMEOUT)
            .await
            .expect("listening");
        assert_eq!(addr.port(), port);
    }

    #[tokio::test]
    async fn a_closed_port_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("bound").port();
        drop(listener);
        let err = check_reachable(&LOCALHOST, port, PreferredFamily::V4, TIMEOUT)
            .await
            .expect_err("closed");
        assert!(matches!(err, ReachabilityError::Connect { .. }), "{err}");
    }

    #[tokio::test]
    async fn host_names_resolve_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("bound").port();
        let host = ExternalHost::Name("localhost".into());
        let addr = check_reachable(&host, port, PreferredFamily::V4, TIMEOUT)
            .await
            .expect("localhost from /etc/hosts");
        assert_eq!(addr, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
}
