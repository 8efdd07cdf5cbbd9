//! OTLP export against a real receiver: an OpenTelemetry collector's gRPC services (the
//! official protos, opentelemetry-proto's tonic stubs) run in this test and record what three
//! real node processes push: named metrics and the spans submit, announce, pull, flush and
//! discovery_round, each tagged with the node that sent it.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use tonic::{Request, Response, Status};

use common::{TestNode, eventually, init_crypto};

/// Timers scaled down so two nodes connect in a second or two, and a fast push interval.
const FAST: [(&str, &str); 5] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "1"),
    ("SORCHA_PEER__TELEMETRY__OTLP_INTERVAL", "300ms"),
];

const SETTLE: Duration = Duration::from_secs(60);

/// What arrived, as `(service.instance.id, name)`.
#[derive(Default, Clone)]
struct Received {
    metrics: Arc<Mutex<BTreeSet<(String, String)>>>,
    spans: Arc<Mutex<BTreeSet<(String, String)>>>,
    services: Arc<Mutex<BTreeSet<String>>>,
}

impl Received {
    fn note_resource(&self, resource: Option<&Resource>) -> String {
        let attr = |key: &str| {
            resource
                .into_iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == key)
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        self.services.lock().unwrap().insert(attr("service.name"));
        attr("service.instance.id")
    }

    fn has_metric(&self, node: &str, name: &str) -> bool {
        let key = (node.to_owned(), name.to_owned());
        self.metrics.lock().unwrap().contains(&key)
    }

    fn span_names(&self) -> BTreeSet<String> {
        let spans = self.spans.lock().unwrap();
        spans.iter().map(|(_, name)| name.clone()).collect()
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        for rm in request.into_inner().resource_metrics {
            let node = self.note_resource(rm.resource.as_ref());
            let mut metrics = self.metrics.lock().unwrap();
            for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                metrics.insert((node.clone(), metric.name.clone()));
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for rs in request.into_inner().resource_spans {
            let node = self.note_resource(rs.resource.as_ref());
            let mut spans = self.spans.lock().unwrap();
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                spans.insert((node.clone(), span.name.clone()));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves the collector's metrics and trace services on a loopback port.
async fn collector() -> (Received, u16) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tonic::transport::Server::builder()
        .add_service(MetricsServiceServer::new(received.clone()))
        .add_service(TraceServiceServer::new(received.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (received, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_spans_reach_an_otlp_collector() {
    init_crypto();
    let (received, port) = collector().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut env = FAST.to_vec();
    env.push(("SORCHA_PEER__TELEMETRY__OTLP_ENDPOINT", &endpoint));

    // Alone, the first node is Offline: this submission waits in the offline queue and is
    // flushed into gossip once the second node joins (the flush span).
    let first = TestNode::start_with(&[], &env);
    let queued = first.submit(&b"queued while offline"[..]).await;
    let second = TestNode::start_with(&["--bootstrap", &first.peer_addr()], &env);
    let connected = eventually(SETTLE, || async {
        second
            .get_text(&format!("/api/v1/transactions/{queued}"))
            .await
            .0
            == 200
    })
    .await;
    assert!(
        connected,
        "the queued transaction never reached the second node"
    );
    // Online, a small body goes by eager push (the push span) and one over the push threshold
    // (16 KiB) by announcement and pull.
    first.submit(&b"submitted online"[..]).await;
    first.submit(vec![b'x'; 20_000]).await;
    // A third node hears of the second from the first, and asks it for more: a discovery
    // round (the first two only ever know each other through bootstrap).
    let third = TestNode::start_with(&["--bootstrap", &first.peer_addr()], &env);

    let ids = [
        peer_id(&first).await,
        peer_id(&second).await,
        peer_id(&third).await,
    ];
    let wanted_spans = [
        "submit",
        "flush",
        "push",
        "announce",
        "pull",
        "discovery_round",
    ];
    let wanted_metrics = [
        "peer_count",
        "peer_service_status",
        "gossip_rounds_total",
        "transaction_pulls_total",
        "bandwidth_sent_bytes",
    ];
    let arrived = eventually(SETTLE, || async {
        let spans = received.span_names();
        wanted_spans.iter().all(|s| spans.contains(*s))
            && ids
                .iter()
                .all(|id| wanted_metrics.iter().all(|m| received.has_metric(id, m)))
    })
    .await;
    let metrics = received.metrics.lock().unwrap().clone();
    assert!(
        arrived,
        "spans {:?} (wanted {wanted_spans:?}); metrics {metrics:?} (wanted {wanted_metrics:?} from {ids:?})",
        received.span_names(),
    );
    assert_eq!(
        *received.services.lock().unwrap(),
        BTreeSet::from(["sorcha-peer".to_owned()])
    );
    // Prometheus stays.
    let (code, page) = first.get_text("/metrics").await;
    assert_eq!(code, 200);
    assert!(page.contains("peer_service_status"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported() {
    init_crypto();
    let (received, port) = collector().await;
    // The receiver exists, but the node is not told about it: off by default.
    let _ = port;
    let node = TestNode::start_with(&[], &FAST);
    node.submit(&b"local only"[..]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(received.metrics.lock().unwrap().is_empty());
    assert!(received.spans.lock().unwrap().is_empty());
}

async fn peer_id(node: &TestNode) -> String {
    let status = node.status().await;
    status["peer_id"].as_str().unwrap().to_owned()
}
