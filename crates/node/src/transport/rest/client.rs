//! Reaching a peer over the REST fallback: the same requests as over gRPC, as JSON over
//! HTTP/1.1 with reqwest's pooled keep-alive connections. Answers are read with a size bound
//! before they are parsed, and every failure maps onto the same outcomes a gRPC failure does.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sorcha_peer_core::gossip::FetchFailure;
use sorcha_peer_core::membership::{Failure, Request, Response};
use sorcha_peer_core::model::PeerId;
use sorcha_peer_wire::membership::{Answer, Call};

use crate::clock::now;
use crate::wire::proto::communication::{MessageAck, PeerMessage};
use crate::wire::proto::transaction::{
    NotificationAck, TransactionNotification, TransactionResponse,
};

/// Largest control answer read (a peer list of 100 entries is far below).
const MAX_CONTROL_ANSWER: usize = 512 * 1024;

/// Why a REST call failed, in the terms the core understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestFailure {
    /// No answer in time.
    Timeout,
    /// No connection, or the answer was not HTTP.
    Unreachable,
    /// The peer answered with an error status (it is alive).
    Refused(u16),
    /// The answer was too large or not the expected JSON.
    Malformed,
}

impl From<RestFailure> for Failure {
    fn from(f: RestFailure) -> Self {
        match f {
            RestFailure::Timeout => Failure::Timeout,
            RestFailure::Unreachable => Failure::Unreachable,
            RestFailure::Refused(_) | RestFailure::Malformed => Failure::Refused,
        }
    }
}

#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
}

impl RestClient {
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        // The fallback dials `http://` only, so no root certificates: without this, building
        // the client read every file of the system's certificate store (rustls' platform
        // verifier): ~5 % of a node's start-up CPU (`crates/lab/README.md`, session 14).
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(2)
            .no_proxy()
            .tls_certs_only(Vec::new())
            .build()?;
        Ok(Self { http })
    }

    /// A membership request to the peer at `base` (`http://host:port`).
    pub async fn call(
        &self,
        base: &str,
        request: Request,
        me: &PeerId,
        max_tx: u32,
    ) -> Result<Response, RestFailure> {
        let answer = match Call::new(&request, me, now()) {
            Call::Ping(m) => {
                let url = format!("{base}/api/v1/peers/ping?peerId={}", m.peer_id);
                Answer::Pong(self.get(&url).await?)
            }
            Call::Register(m) => Answer::Registered(
                self.post(&format!("{base}/api/v1/peers/register"), &m)
                    .await?,
            ),
            Call::GetPeerList(m) => {
                let url = format!(
                    "{base}/api/v1/peers/list?requestingPeerId={}&maxPeers={}",
                    m.requesting_peer_id, m.max_peers
                );
                Answer::PeerList(self.get(&url).await?)
            }
            Call::ExchangePeers(m) => Answer::Exchanged(
                self.post(&format!("{base}/api/v1/peers/exchange"), &m)
                    .await?,
            ),
            Call::Heartbeat(m) => Answer::Heartbeat(
                self.post(&format!("{base}/api/v1/peers/heartbeat"), &m)
                    .await?,
            ),
        };
        answer
            .into_response(max_tx)
            .map_err(|_| RestFailure::Malformed)
    }

    /// Pulls a body over `GET /api/v1/transactions/{name}` (a whole hash or an id, as hex) in
    /// JSON.
    pub async fn fetch(
        &self,
        base: &str,
        name: &str,
        max_tx: u32,
    ) -> Result<Vec<u8>, FetchFailure> {
        let url = format!("{base}/api/v1/transactions/{name}");
        // Base64 grows a body by a third.
        let limit = max_tx as usize / 3 * 4 + 4096;
        let request = self.http.get(url).header("accept", "application/json");
        let answer: TransactionResponse = read(request, limit).await.map_err(|f| match f {
            RestFailure::Timeout => FetchFailure::Timeout,
            RestFailure::Unreachable => FetchFailure::Unreachable,
            RestFailure::Refused(404) => FetchFailure::NotFound,
            RestFailure::Refused(_) => FetchFailure::Unreachable,
            RestFailure::Malformed => FetchFailure::TooLarge,
        })?;
        if answer.found {
            Ok(answer.transaction_data)
        } else {
            Err(FetchFailure::NotFound)
        }
    }

    /// Delivers a gossip message over `POST /api/v1/messages`.
    pub async fn message(&self, base: &str, message: &PeerMessage) -> Result<(), RestFailure> {
        let ack: MessageAck = self
            .post(&format!("{base}/api/v1/messages"), message)
            .await?;
        if ack.received {
            Ok(())
        } else {
            Err(RestFailure::Refused(200))
        }
    }

    /// Announces a transaction to a Sorcha peer over `POST /api/v1/transactions/notify`.
    pub async fn notify(
        &self,
        base: &str,
        notification: &TransactionNotification,
    ) -> Result<(), RestFailure> {
        let url = format!("{base}/api/v1/transactions/notify");
        let _: NotificationAck = self.post(&url, notification).await?;
        Ok(())
    }

    async fn get<T: DeserializeOwned>(&self, url: &str) -> Result<T, RestFailure> {
        read(self.http.get(url), MAX_CONTROL_ANSWER).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<T, RestFailure> {
        read(self.http.post(url).json(body), MAX_CONTROL_ANSWER).await
    }
}

/// Sends `request` and parses at most `limit` bytes of its answer.
async fn read<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    limit: usize,
) -> Result<T, RestFailure> {
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            RestFailure::Timeout
        } else {
            RestFailure::Unreachable
        }
    };
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(RestFailure::Refused(status.as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|len| len as usize > limit)
    {
        return Err(RestFailure::Malformed);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limit {
            return Err(RestFailure::Malformed);
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|_| RestFailure::Malformed)
}
