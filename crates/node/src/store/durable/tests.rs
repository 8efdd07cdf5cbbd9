use std::time::Duration;

use super::*;

fn limits() -> Limits {
    Limits::small()
}

fn tx(body: &[u8], at: u64) -> NewTx {
    NewTx {
        hash: TxHash::of(body),
        body: Arc::from(body),
        register_id: Some("reg".into()),
        origin: "local".into(),
        first_seen: Timestamp::from_millis(crate::clock::now().as_millis() + at),
    }
}

fn open(dir: &tempfile::TempDir, limits: Limits) -> TxDb {
    TxDb::open_in(dir.path(), Durability::Full, limits).unwrap()
}

fn find(db: &TxDb, body: &[u8]) -> Option<StoredTxAlias> {
    let hash = TxHash::of(body);
    db.find(&hash.id(), Some(&hash)).unwrap()
}

type StoredTxAlias = crate::store::transactions::StoredTx;

#[tokio::test]
async fn a_put_is_readable_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, limits());
    assert!(db.put(tx(b"one", 0), false).await.unwrap());
    assert!(
        !db.put(tx(b"one", 1), false).await.unwrap(),
        "known already"
    );
    assert_eq!(find(&db, b"one").unwrap().body.as_ref(), b"one");
    db.shutdown();
    drop(db);
    let db = open(&dir, limits());
    let got = find(&db, b"one").expect("kept across a restart");
    assert_eq!(got.register_id.as_deref(), Some("reg"));
    assert_eq!(db.stats().rows, 1);
    let loaded = db
        .load_recent(Timestamp::from_millis(0), 10, 1 << 20)
        .unwrap();
    assert_eq!(loaded.len(), 1);
    assert!(!loaded[0].queued);
}

#[tokio::test]
async fn concurrent_puts_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &dir,
        Limits {
            max_transactions: 10_000,
            ..limits()
        },
    );
    let puts = (0..500u32).map(|n| {
        let db = db.clone();
        async move { db.put(tx(&n.to_le_bytes(), 0), false).await }
    });
    let results = futures::future::join_all(puts).await;
    assert!(results.iter().all(|r| matches!(r, Ok(true))));
    let stats = db.stats();
    assert_eq!((stats.rows, stats.jobs), (500, 500));
    assert!(
        stats.groups < 500,
        "grouped: {} commits for 500 puts",
        stats.groups
    );
}

#[tokio::test]
async fn bounds_evict_oldest_but_never_a_queued_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &dir,
        Limits {
            max_transactions: 3,
            ..limits()
        },
    );
    db.put(tx(b"queued", 0), true).await.unwrap();
    for body in [&b"a"[..], b"b", b"c", b"d"] {
        db.put(tx(body, 0), false).await.unwrap();
    }
    assert!(find(&db, b"queued").is_some(), "queued rows stay");
    assert!(
        find(&db, b"a").is_none() && find(&db, b"b").is_none(),
        "oldest go first"
    );
    assert!(find(&db, b"d").is_some());
    let stats = db.stats();
    assert_eq!((stats.rows, stats.evicted, stats.queued), (3, 2, 1));
}

#[tokio::test]
async fn the_ttl_expires_unqueued_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &dir,
        Limits {
            ttl: Duration::from_secs(60),
            ..limits()
        },
    );
    let old = NewTx {
        first_seen: Timestamp::from_millis(1_000),
        ..tx(b"old", 0)
    };
    db.put(old.clone(), false).await.unwrap();
    db.put(
        NewTx {
            hash: TxHash::of(b"oldq"),
            body: Arc::from(&b"oldq"[..]),
            ..old
        },
        true,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    db.put(tx(b"new", 0), false).await.unwrap();
    assert!(find(&db, b"old").is_none());
    assert!(find(&db, b"oldq").is_some(), "queued rows outlive the TTL");
    assert_eq!(db.stats().expired, 1);
}

/// The TTL walks the oldest rows in arrival order (no index on `first_seen`): across more
/// than one step of the walk, and no further than the first young row.
#[tokio::test]
async fn the_ttl_walks_the_oldest_rows_up_to_the_first_young_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &dir,
        Limits {
            max_transactions: 1_000,
            ttl: Duration::from_secs(60),
            ..limits()
        },
    );
    let old = 300u64;
    for i in 0..old {
        let body = format!("old {i}");
        db.put_nowait(NewTx {
            first_seen: Timestamp::from_millis(1_000 + i),
            ..tx(body.as_bytes(), 0)
        })
        .unwrap();
    }
    db.put_nowait(tx(b"young", 0)).unwrap();
    db.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    db.put(tx(b"newer", 0), false).await.unwrap();
    assert_eq!(db.stats().expired, old);
    assert_eq!(db.stats().rows, 2);
    assert!(find(&db, b"old 299").is_none());
    assert!(find(&db, b"young").is_some());
}

#[tokio::test]
async fn the_queue_is_bounded_retried_confirmed_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &dir,
        Limits {
            max_queued: 2,
            ..limits()
        },
    );
    assert!(db.put(tx(b"q1", 0), true).await.unwrap());
    assert!(db.put(tx(b"q2", 0), true).await.unwrap());
    assert!(
        !db.put(tx(b"q1", 0), true).await.unwrap(),
        "known: not refused"
    );
    let full = db.put(tx(b"q3", 0), true).await.unwrap_err();
    assert!(full.to_string().contains("full"), "{full}");
    assert_eq!(db.pending(), 2);

    let now = crate::clock::now().saturating_add(Duration::from_secs(1));
    let due = db.take_due(now, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(db.take_due(now, 10).await.unwrap().is_empty(), "backed off");
    db.confirm_later(TxHash::of(b"q1"));
    db.confirm_pulled().unwrap();
    db.flush().await.unwrap();
    assert_eq!(db.pending(), 1);
    let mut at = now;
    let mut gave_up = Vec::new();
    for _ in 0..4 {
        at = at.saturating_add(Duration::from_secs(60));
        let taken = db.take_due(at, 10).await.unwrap();
        gave_up.extend(taken.into_iter().filter(|d| d.gave_up.is_some()));
    }
    assert_eq!(db.pending(), 0);
    // The take that moved it says so (the flusher records `tx_dead_lettered` from this).
    assert_eq!(gave_up.len(), 1);
    assert_eq!(gave_up[0].hash, TxHash::of(b"q2"));
    assert!(gave_up[0].gave_up.as_deref().unwrap().contains("attempts"));
    let dead = db.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].hash, TxHash::of(b"q2").to_string());
    assert!(
        find(&db, b"q2").is_some(),
        "a dead letter is still readable"
    );
}

#[test]
fn a_corrupt_file_names_itself_and_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(TRANSACTIONS_DB_FILE), vec![7u8; 8192]).unwrap();
    let err = TxDb::open_in(dir.path(), Durability::Full, limits())
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains(TRANSACTIONS_DB_FILE), "{text}");
    assert!(text.contains("move the file away"), "{text}");
}

#[tokio::test]
async fn an_earlier_versions_queue_is_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    let old = rusqlite::Connection::open(dir.path().join(LEGACY_QUEUE_FILE)).unwrap();
    old.execute_batch(
        "CREATE TABLE queue (hash TEXT PRIMARY KEY, body BLOB, register_id TEXT,
             queued_at INTEGER, attempts INTEGER, next_attempt_at INTEGER);
         CREATE TABLE dead_letters (hash TEXT PRIMARY KEY, body BLOB, register_id TEXT,
             queued_at INTEGER, attempts INTEGER, reason TEXT);",
    )
    .unwrap();
    let (a, b) = (TxHash::of(b"queued"), TxHash::of(b"dead"));
    old.execute(
        "INSERT INTO queue VALUES (?1, ?2, 'r', 1, 0, 1)",
        rusqlite::params![a.to_string(), &b"queued"[..]],
    )
    .unwrap();
    old.execute(
        "INSERT INTO dead_letters VALUES (?1, ?2, NULL, 1, 5, 'gave up')",
        rusqlite::params![b.to_string(), &b"dead"[..]],
    )
    .unwrap();
    drop(old);
    let db = open(&dir, limits());
    assert_eq!(db.pending(), 1);
    assert_eq!(
        find(&db, b"queued").unwrap().register_id.as_deref(),
        Some("r")
    );
    assert_eq!(db.dead_letters(10).unwrap()[0].reason, "gave up");
    assert!(!dir.path().join(LEGACY_QUEUE_FILE).exists());
    assert!(dir.path().join("queue.db.imported").exists());
}

#[tokio::test]
async fn an_acknowledged_push_confirms_a_queued_row_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, limits());
    assert!(db.put(tx(b"q1", 0), true).await.unwrap());
    assert!(db.put(tx(b"q2", 0), true).await.unwrap());
    let (q1, q2) = (TxHash::of(b"q1"), TxHash::of(b"q2"));
    assert!(!db.wants_ack(&q1.id()), "not handed to gossip yet");
    db.await_ack([q1, q2]);
    assert!(db.wants_ack(&q1.id()) && db.wants_ack(&q2.id()));
    assert!(!db.wants_ack(&TxHash::of(b"other").id()));
    assert!(db.acknowledged(&q1.id()));
    assert!(!db.acknowledged(&q1.id()), "a second ack finds nothing");
    assert!(!db.wants_ack(&q1.id()), "later pushes need not ask");
    db.confirm_pulled().unwrap();
    db.flush().await.unwrap();
    assert_eq!(db.pending(), 1, "q2 still waits");
    // A pull of q2 confirms it too, and it no longer waits for an ack.
    db.confirm_later(q2);
    assert!(!db.wants_ack(&q2.id()));
    db.confirm_pulled().unwrap();
    db.flush().await.unwrap();
    assert_eq!(db.pending(), 0);
    assert!(
        find(&db, b"q1").is_some(),
        "confirmed rows are kept, readable"
    );
}

/// Ids in the store's in-memory index, as the writer keeps it.
fn indexed(db: &TxDb) -> usize {
    lock(&db.shared.ids).len()
}

#[tokio::test]
async fn the_id_index_follows_the_rows_across_evictions_expiry_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let bounded = Limits {
        max_transactions: 3,
        ttl: Duration::from_secs(60),
        ..limits()
    };
    let db = open(&dir, bounded);
    let expired = NewTx {
        first_seen: Timestamp::from_millis(1_000),
        ..tx(b"expired", 0)
    };
    db.put(expired, false).await.unwrap();
    for body in [&b"a"[..], b"b", b"c", b"d"] {
        db.put(tx(body, 0), false).await.unwrap();
    }
    assert_eq!((db.stats().rows, indexed(&db)), (3, 3), "evicted ids go");
    // An evicted id is new again.
    assert!(db.put(tx(b"a", 0), false).await.unwrap());
    assert!(
        !db.put(tx(b"d", 0), false).await.unwrap(),
        "a kept id is not"
    );
    db.shutdown();
    drop(db);
    let db = open(&dir, bounded);
    assert_eq!(indexed(&db), 3, "loaded from the file");
    assert!(find(&db, b"a").is_some() && find(&db, b"d").is_some());
    assert!(find(&db, b"b").is_none() && find(&db, b"expired").is_none());
    assert!(!db.put(tx(b"c", 0), false).await.unwrap());
}

#[tokio::test]
async fn a_version_2_file_loses_its_id_index_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TRANSACTIONS_DB_FILE);
    {
        let mut conn = Connection::open(&path).unwrap();
        schema::MIGRATIONS.to_version(&mut conn, 2).unwrap();
        let hash = TxHash::of(b"old");
        conn.execute(
            "INSERT INTO transactions (id, hash, body, origin, first_seen, state)
             VALUES (?1, ?2, ?3, 'local', ?4, 1)",
            rusqlite::params![
                &hash.id().as_bytes()[..],
                &hash.as_bytes()[..],
                &b"old"[..],
                crate::clock::now().as_millis() as i64
            ],
        )
        .unwrap();
    }
    let db = open(&dir, limits());
    assert!(find(&db, b"old").is_some());
    assert_eq!((db.stats().rows, db.stats().queued), (1, 1), "state kept");
    assert!(!db.put(tx(b"old", 0), true).await.unwrap(), "known");
    db.shutdown();
    let conn = Connection::open(&path).unwrap();
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, ["transactions_dead", "transactions_due"]);
}
