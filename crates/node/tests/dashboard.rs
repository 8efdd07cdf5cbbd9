//! The operator's dashboard in a real browser (Debian's chromium, driven through chromedriver
//! with fantoccini) against three real node processes: the peers appear, a transaction
//! submitted elsewhere shows in the event log and the counters, the ban button bans, and the
//! page stays responsive with 1,000 peers and 10 events a second. A screenshot is written to
//! `<target>/tmp/dashboard/dashboard.png` (and to `docs/dashboard.png` with
//! `SORCHA_UPDATE_SCREENSHOT=1`).
//!
//! Without chromium and chromedriver the test says so and passes, except under CI (`CI` set),
//! where it fails: `scripts/test.sh` installs both, so a CI run never skips it silently.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestNode, eventually, init_crypto};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Heartbeats and refreshes scaled down so the cluster settles in seconds.
const FAST: [(&str, &str); 4] = [
    ("SORCHA_PEER__DISCOVERY__HEARTBEAT_INTERVAL", "300ms"),
    ("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "1s"),
    ("SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL", "2s"),
    ("SORCHA_PEER__DISTRIBUTION__ANTI_ENTROPY_INTERVAL", "500ms"),
];

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when the browser is installed; false (test skipped) only outside CI.
fn browser_available() -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {CHROMIUM} or {CHROMEDRIVER} is missing: scripts/test.sh installs them (apt-get install chromium chromium-driver)"
    );
    eprintln!(
        "SKIPPED: {CHROMIUM} or {CHROMEDRIVER} missing; run scripts/test.sh or apt-get install chromium chromium-driver"
    );
    false
}

async fn open_browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1400"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session")
}

/// Polls the page with `script` (returns a boolean) until true or `limit`; the time it took.
async fn wait_for(browser: &Client, limit: Duration, what: &str, script: &str) -> Duration {
    let started = Instant::now();
    loop {
        let ok = browser.execute(script, vec![]).await.expect("script");
        if ok == Value::Bool(true) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?} ({script})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where test output goes.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("output dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_peers_events_and_bans_in_a_browser() {
    if !browser_available() {
        return;
    }
    init_crypto();
    let a = TestNode::start_with(&[], &FAST);
    let b = TestNode::start_with(&["--bootstrap", &a.peer_addr()], &FAST);
    let c = TestNode::start_with(&["--bootstrap", &a.peer_addr()], &FAST);
    let (b_id, c_id) = (peer_id(&b).await, peer_id(&c).await);

    let driver = Driver::start();
    let browser = open_browser(&driver).await;
    browser
        .goto(&a.http_url("/admin"))
        .await
        .expect("open /admin");

    // Both peers within 5 s of opening the page.
    let both = format!(
        "return !!document.querySelector('#peer-rows tr[data-id=\"{b_id}\"]') && !!document.querySelector('#peer-rows tr[data-id=\"{c_id}\"]');"
    );
    let took = wait_for(&browser, Duration::from_secs(5), "both peers shown", &both).await;
    eprintln!("dashboard: both peers shown {took:?} after opening the page");

    // A transaction submitted on C: in A's event log and counter within 2 s.
    let before = browser
        .execute("return window.sorchaDashboard.state.prev ? window.sorchaDashboard.state.prev.counters.tx_accepted : 0;", vec![])
        .await
        .expect("counter");
    let hash = c.submit(b"dashboard test transaction".to_vec()).await;
    let submitted = Instant::now();
    let in_log = format!(
        "return [...document.querySelectorAll('#event-rows tr.kind-tx_accepted')].some(r => r.textContent.includes('{hash}'));"
    );
    wait_for(
        &browser,
        Duration::from_secs(2),
        "tx in the event log",
        &in_log,
    )
    .await;
    let counted = format!(
        "return document.getElementById('tx-total').textContent.startsWith('{} ');",
        before.as_u64().unwrap_or(0) + 1
    );
    let remaining = Duration::from_secs(2).saturating_sub(submitted.elapsed());
    wait_for(&browser, remaining, "tx in the counter", &counted).await;
    eprintln!(
        "dashboard: transaction from C shown on A's page {:?} after submission",
        submitted.elapsed()
    );

    // Some traffic for the charts (an uneven rate, as real traffic), then the ban button.
    for i in 0..60u64 {
        c.submit(format!("chart traffic {i}").into_bytes()).await;
        tokio::time::sleep(Duration::from_millis(40 + (i * 37 % 120))).await;
    }
    let ban = format!("button[data-action=\"ban\"][data-id=\"{b_id}\"]");
    click_live(&browser, &ban).await;
    let banned = eventually(Duration::from_secs(5), || async {
        let (_, peer) = a.get_json(&format!("/api/v1/peers/{b_id}")).await;
        peer["banned_until"].is_u64()
    })
    .await;
    assert!(banned, "the API does not show the ban");
    let ban_logged = format!(
        "return !!document.querySelector('#event-rows tr.kind-banned td.id[title=\"{b_id}\"]');"
    );
    wait_for(
        &browser,
        Duration::from_secs(3),
        "ban in the event log",
        &ban_logged,
    )
    .await;
    // The kind filter keeps only bans; cleared, everything is back.
    let only_bans = browser
        .execute(
            r#"const k = document.getElementById('event-kind');
               k.value = 'banned'; k.dispatchEvent(new Event('change'));
               const rows = [...document.querySelectorAll('#event-rows tr')];
               const ok = rows.length > 0 && rows.every(r => r.classList.contains('kind-banned'));
               k.value = ''; k.dispatchEvent(new Event('change'));
               return ok && document.querySelectorAll('#event-rows tr.kind-tx_accepted').length > 0;"#,
            vec![],
        )
        .await
        .expect("filter");
    assert_eq!(only_bans, Value::Bool(true), "the kind filter");
    // Let the charts draw a few points before the picture.
    tokio::time::sleep(Duration::from_secs(2)).await;
    screenshot(&browser).await;

    measure_render(&browser).await;
    browser.close().await.expect("close browser");
}

async fn peer_id(node: &TestNode) -> String {
    let ok = eventually(Duration::from_secs(10), || async {
        node.status().await["peer_id"].is_string()
    })
    .await;
    assert!(ok, "no status");
    node.status().await["peer_id"]
        .as_str()
        .expect("peer id")
        .to_owned()
}

async fn screenshot(browser: &Client) {
    let png = browser.screenshot().await.expect("screenshot");
    let path = output_dir().join("dashboard.png");
    std::fs::write(&path, &png).expect("write screenshot");
    eprintln!("dashboard: screenshot in {}", path.display());
    if std::env::var_os("SORCHA_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        std::fs::write(&docs, &png).expect("write docs/dashboard.png");
    }
}

/// 1,000 peers in every snapshot and 10 events a second, fed to the page's own render path
/// for 30 simulated seconds: every frame must stay well inside a responsive budget.
async fn measure_render(browser: &Client) {
    let script = r#"
        const d = window.sorchaDashboard;
        const peers = [];
        for (let i = 0; i < 1000; i++) {
          const id = (i.toString(16).padStart(8, '0') + 'ab'.repeat(16)).slice(0, 40);
          peers.push({ peer_id: id, address: '10.0.' + (i >> 8) + '.' + (i & 255), port: 5001,
            status: ['alive', 'suspect', 'unreachable', 'candidate'][i % 4], active: i % 3 === 0,
            first_seen: Date.now(), last_seen: Date.now(), last_seen_ago_ms: i * 10,
            latency_ms: i % 50, failure_count: i % 4, is_bootstrap: false, banned_until: null,
            protocols: ['GrpcStream'], circuit: 'closed', protocol: 'GrpcStream' });
        }
        const base = d.state.prev;
        const times = [], scripts = [];
        let seq = 1e9;
        for (let s = 0; s < 30; s++) {
          const t0 = performance.now();
          for (let e = 0; e < 10; e++) {
            d.addEvent({ seq: seq++, time: Date.now(), kind: 'tx_accepted', peer: peers[e].peer_id,
              detail: 'synthetic event ' + seq });
          }
          const snap = JSON.parse(JSON.stringify(base));
          snap.time = base.time + (s + 1) * 1000;
          snap.peers = peers;
          d.applySnapshot(snap);
          d.renderNow();
          scripts.push(performance.now() - t0);
          // Forces the layout the update causes, so it is inside the measured time.
          void document.body.offsetHeight;
          times.push(performance.now() - t0);
        }
        times.sort((a, b) => a - b);
        scripts.sort((a, b) => a - b);
        return { median: times[15], p90: times[27], max: times[29], script_median: scripts[15],
                 rows: document.querySelectorAll('#peer-rows tr').length,
                 pager: document.getElementById('peer-page').textContent };
    "#;
    let result = browser
        .execute(script, vec![])
        .await
        .expect("render benchmark");
    eprintln!("dashboard: render with 1,000 peers + 10 events/s: {result}");
    assert_eq!(result["rows"], 100, "one page of the table: {result}");
    assert_eq!(result["pager"], "1–100 of 1000", "{result}");
    // The render time is a figure to report (printed above; measured at ~90 ms median with a
    // load average of 10, see the README), not a pass mark: timed assertions flake on shared
    // machines. Only a render that blocks the page for seconds (a regression to rendering all
    // 1,000 rows and more) fails.
    let max = result["max"].as_f64().expect("max");
    assert!(max < 5_000.0, "a render blocked the page: {result}");
}

/// Clicks the element `css` names on a page that redraws itself: the live peer table may
/// replace the button between finding and clicking it (a stale element), so it is found again,
/// a few times at most, as a user would click again.
async fn click_live(browser: &Client, css: &str) {
    let mut last = None;
    for _ in 0..5 {
        let found = browser.find(Locator::Css(css)).await.expect("ban button");
        match found.click().await {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("click ban: {last:?}");
}
