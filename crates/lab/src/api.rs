//! The node's HTTP surface as the lab drives it: status, metrics, submissions, listings, bans.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use crate::prom::Scrape;

/// A transaction hash, decoded: 32 bytes rather than 64 hex characters per entry, since the lab
/// tracks every transaction on every node.
pub type TxKey = [u8; 32];

/// Longest wait for one ordinary request; a SIGSTOPped node must not stall the lab.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Hashes asked for per listing page (the node's own maximum).
const PAGE: usize = 1000;

pub fn tx_key(hex_hash: &str) -> Option<TxKey> {
    let mut key = [0; 32];
    hex::decode_to_slice(hex_hash, &mut key).ok()?;
    Some(key)
}

/// Errors talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{url}: {error}")]
    Http { url: String, error: reqwest::Error },
    #[error("{url}: HTTP {code}: {body}")]
    Status {
        url: String,
        code: u16,
        body: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub peer_id: String,
    pub state: String,
    #[serde(default)]
    pub peers_known: u64,
    #[serde(default)]
    pub peers_active: u64,
    #[serde(default)]
    pub queue_size: u64,
}

/// What a submission came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// 201/200: known to the node now; 202: in its offline queue.
    Accepted { key: TxKey, queued: bool },
    /// Anything else, with the status (0: no answer) and the error text.
    Refused { code: u16, error: String },
}

#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    /// `Authorization: Bearer` for admin calls from a non-loopback address (netns).
    tokens: std::sync::Arc<Vec<std::sync::OnceLock<String>>>,
}

impl Api {
    pub fn new(nodes: usize, concurrency: usize) -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency.max(8))
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .expect("a reqwest client without TLS roots always builds");
        let tokens = (0..nodes).map(|_| std::sync::OnceLock::new()).collect();
        Self {
            client,
            tokens: std::sync::Arc::new(tokens),
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Remembers node `i`'s admin token (read from its data dir).
    pub fn set_token(&self, i: usize, token: String) {
        let _ = self.tokens[i].set(token);
    }

    async fn get(&self, url: String) -> Result<reqwest::Response, ApiError> {
        let response = self
            .client
            .get(&url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|error| ApiError::Http {
                url: url.clone(),
                error,
            })?;
        checked(url, response).await
    }

    pub async fn status(&self, base: &str) -> Result<Status, ApiError> {
        let url = format!("{base}/api/v1/status");
        let response = self.get(url.clone()).await?;
        response
            .json()
            .await
            .map_err(|error| ApiError::Http { url, error })
    }

    pub async fn ready(&self, base: &str) -> bool {
        self.get(format!("{base}/health/ready")).await.is_ok()
    }

    pub async fn metrics(&self, base: &str) -> Result<Scrape, ApiError> {
        let url = format!("{base}/metrics");
        let text = self
            .get(url.clone())
            .await?
            .text()
            .await
            .map_err(|error| ApiError::Http { url, error })?;
        Ok(Scrape::parse(&text))
    }

    /// Submits `body` to node `i` at `base`, with its admin token when the lab has it (a call
    /// from outside the node's loopback, as in `--hosts netns`, needs it).
    pub async fn submit(&self, i: usize, base: &str, body: Vec<u8>) -> Submitted {
        let url = format!("{base}/api/v1/transactions");
        let mut request = self.client.post(&url);
        if let Some(token) = self.tokens[i].get() {
            request = request.bearer_auth(token);
        }
        let sent = request.timeout(REQUEST_TIMEOUT).body(body).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Submitted::Refused {
                    code: 0,
                    error: e.to_string(),
                };
            }
        };
        let code = response.status().as_u16();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        let key = answer["hash"].as_str().and_then(tx_key);
        match (code, key) {
            (200..=202, Some(key)) => Submitted::Accepted {
                key,
                queued: code == 202,
            },
            _ => Submitted::Refused {
                code,
                error: answer["error"]
                    .as_str()
                    .map_or_else(|| answer.to_string(), str::to_owned),
            },
        }
    }

    /// The peer ids in the node's active set.
    pub async fn active_peers(&self, base: &str) -> Result<Vec<String>, ApiError> {
        let url = format!("{base}/api/v1/peers");
        let doc: serde_json::Value = self
            .get(url.clone())
            .await?
            .json()
            .await
            .map_err(|error| ApiError::Http { url, error })?;
        let peers = doc["peers"].as_array().cloned().unwrap_or_default();
        Ok(peers
            .iter()
            .filter(|p| p["active"] == true)
            .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
            .collect())
    }

    /// What the node knows of `peer_id` (`/api/v1/peers/{id}`), as the JSON it sent; `None`
    /// when it does not know it (or does not answer).
    pub async fn peer(&self, base: &str, peer_id: &str) -> Option<serde_json::Value> {
        let url = format!("{base}/api/v1/peers/{peer_id}");
        self.get(url).await.ok()?.json().await.ok()
    }

    /// Every hash the node holds, page by page.
    pub async fn hashes(&self, base: &str) -> Result<HashSet<TxKey>, ApiError> {
        let mut keys = HashSet::new();
        let mut offset = 0;
        loop {
            let url = format!("{base}/api/v1/transactions?offset={offset}&limit={PAGE}");
            let doc: serde_json::Value = self
                .get(url.clone())
                .await?
                .json()
                .await
                .map_err(|error| ApiError::Http { url, error })?;
            let page = doc["transactions"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return Ok(keys);
            }
            offset += page.len();
            keys.extend(
                page.iter()
                    .filter_map(|t| t["hash"].as_str().and_then(tx_key)),
            );
        }
    }

    /// Node `i` (at `base`) bans `peer_id` for `duration`.
    pub async fn ban(
        &self,
        i: usize,
        base: &str,
        peer_id: &str,
        duration: Duration,
    ) -> Result<(), ApiError> {
        let secs = duration.as_secs().max(1);
        let url = format!("{base}/api/v1/peers/{peer_id}/ban?duration={secs}s");
        self.admin(i, self.client.post(&url), url).await
    }

    /// Node `i` lifts its ban of `peer_id`.
    pub async fn unban(&self, i: usize, base: &str, peer_id: &str) -> Result<(), ApiError> {
        let url = format!("{base}/api/v1/peers/{peer_id}/ban");
        self.admin(i, self.client.delete(&url), url).await
    }

    async fn admin(
        &self,
        i: usize,
        mut request: reqwest::RequestBuilder,
        url: String,
    ) -> Result<(), ApiError> {
        if let Some(token) = self.tokens[i].get() {
            request = request.bearer_auth(token);
        }
        let response = request
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|error| ApiError::Http {
                url: url.clone(),
                error,
            })?;
        checked(url, response).await.map(drop)
    }
}

async fn checked(url: String, response: reqwest::Response) -> Result<reqwest::Response, ApiError> {
    let code = response.status();
    if code.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(ApiError::Status {
        url,
        code: code.as_u16(),
        body: body.chars().take(300).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_hex_hashes_only() {
        let hex = "ab".repeat(32);
        assert_eq!(tx_key(&hex), Some([0xab; 32]));
        assert_eq!(tx_key("abc"), None);
        assert_eq!(tx_key(&"zz".repeat(32)), None);
    }
}
