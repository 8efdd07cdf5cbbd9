//! Layering, provenance and refusal of bad values, through [`load`] with hermetic sources.

use std::time::Duration;

use toml::Value;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The refusals of a load that must fail.
fn refused(sources: &Sources) -> Vec<Invalid> {
    match load(sources) {
        Ok(c) => panic!("accepted: {:?}", c.config),
        Err(ConfigError::Invalid(list)) => list,
        Err(other) => panic!("wrong error kind: {other}"),
    }
}

fn one_refusal(sources: &Sources) -> Invalid {
    let mut list = refused(sources);
    assert_eq!(list.len(), 1, "{list:?}");
    list.remove(0)
}

#[test]
fn embedded_defaults_load_and_match_the_template() {
    let loaded = load(&Sources::default()).unwrap();
    assert_eq!(loaded.config, Config::default());
    assert_eq!(loaded.config.network.listen.port(), DEFAULT_PEER_PORT);
    assert_eq!(
        loaded.config.discovery.refresh_interval,
        Duration::from_secs(900)
    );
    let template: Config = toml::from_str(DEFAULT_TOML).unwrap();
    assert_eq!(
        template,
        Config::default(),
        "default.toml drifted from Config::default()"
    );
}

/// The simulator runs the gossip core's defaults; the daemon must ship what it measured. Read
/// from the shipped template (`Config::default()` takes some of them from the core itself).
#[test]
fn the_daemon_ships_the_gossip_defaults_the_simulator_runs() {
    let template: Config = toml::from_str(DEFAULT_TOML).unwrap();
    let shipped = template.gossip();
    let core = sorcha_peer_core::gossip::GossipConfig::default();
    assert_eq!(shipped.anti_entropy_interval, core.anti_entropy_interval);
    assert_eq!(shipped.fetch_timeout, core.fetch_timeout);
    assert_eq!(shipped.fanout, core.fanout);
    assert_eq!(shipped.max_hops, core.max_hops);
    assert_eq!(shipped.flood_fanout, core.flood_fanout);
    assert_eq!(shipped.max_transaction_size, core.max_transaction_size);
    // The push is off in the daemon (default.toml says why), as in the core's default (and so
    // the simulator's) unless a scenario turns it on.
    let pushed = DEFAULT_EAGER_PUSH_BYTES as usize;
    assert_eq!(shipped.eager_push_max_size, pushed);
    assert_eq!(Config::default().gossip().eager_push_max_size, pushed);
}

#[test]
fn layers_apply_in_order_and_remember_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "peer.toml",
        "[discovery]\nmin_healthy_peers = 2\nmax_peers_in_list = 50\nrefresh_interval = \"30s\"\n[network]\nlisten = \"127.0.0.1:7001\"\n",
    );
    let sources = Sources {
        file: Some(path.clone()),
        env: env(&[
            ("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "3"),
            (
                "SORCHA_PEER__DISCOVERY__BOOTSTRAP_NODES",
                "a.example:5001, 10.0.0.2:5001",
            ),
            ("SORCHA_PEER__NODE_ID", "1234"),
            ("UNRELATED", "x"),
        ]),
        flags: vec![(
            "--listen",
            "network.listen".into(),
            Value::String("127.0.0.1:7002".into()),
        )],
    };
    let loaded = load(&sources).unwrap();
    let c = &loaded.config;
    assert_eq!(c.discovery.max_peers_in_list, 50, "file beats default");
    assert_eq!(c.discovery.min_healthy_peers, 3, "env beats file");
    assert_eq!(c.network.listen.port(), 7002, "flag beats file");
    assert_eq!(c.discovery.refresh_interval, Duration::from_secs(30));
    assert_eq!(
        c.discovery.bootstrap_nodes,
        vec!["a.example:5001", "10.0.0.2:5001"]
    );
    assert_eq!(c.node_id, "1234", "a numeric-looking string stays a string");

    let origin = |key: &str| loaded.origins.get(key).cloned().unwrap_or(Origin::Default);
    assert_eq!(origin("discovery.max_peers_in_list"), Origin::File(path));
    assert_eq!(
        origin("discovery.min_healthy_peers"),
        Origin::Env("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS".into())
    );
    assert_eq!(origin("network.listen"), Origin::Flag("--listen"));
    assert_eq!(origin("distribution.fanout"), Origin::Default);
    let rows = loaded.effective();
    let listen = rows.iter().find(|(k, ..)| k == "network.listen").unwrap();
    assert_eq!(listen.1, "\"127.0.0.1:7002\"");
}

#[test]
fn out_of_range_values_name_key_value_origin_and_range() {
    let sources = Sources {
        env: env(&[("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS", "0")]),
        ..Default::default()
    };
    let bad = one_refusal(&sources);
    assert_eq!(bad.key, "discovery.min_healthy_peers");
    assert_eq!(bad.value, "0");
    assert_eq!(
        bad.origin,
        Origin::Env("SORCHA_PEER__DISCOVERY__MIN_HEALTHY_PEERS".into())
    );
    assert!(bad.problem.contains("between 1 and 100"), "{bad}");
}

#[test]
fn an_inbound_bound_below_the_active_set_is_refused() {
    let sources = Sources {
        env: env(&[("SORCHA_PEER__DISCOVERY__MAX_INBOUND", "4")]),
        ..Default::default()
    };
    let bad = one_refusal(&sources);
    assert_eq!(bad.key, "discovery.max_inbound");
    assert!(
        bad.problem.contains("below discovery.active_peers (8)"),
        "{bad}"
    );
    let config = load(&Sources {
        env: env(&[
            ("SORCHA_PEER__DISCOVERY__MAX_INBOUND", "12"),
            ("SORCHA_PEER__DISCOVERY__DISCOVERY_TARGET", "30"),
        ]),
        ..Default::default()
    })
    .expect("valid");
    let membership = config.config.membership();
    assert_eq!(
        (membership.max_inbound, membership.discovery_target),
        (12, 30)
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[distribution]\nfanout = 0\nflood_fanout = 65\n[discovery]\nmax_peers_in_list = 5\npeer_timeout = \"10ms\"\nbootstrap_nodes = [\"good.example:5001\", \"no-port\", \"[::1]:0\"]\n";
    let list = refused(&Sources {
        file: Some(file(&dir, "c.toml", text)),
        ..Default::default()
    });
    let keys: Vec<_> = list.iter().map(|i| i.key.as_str()).collect();
    for key in [
        "distribution.fanout",
        "distribution.flood_fanout",
        "discovery.max_peers_in_list",
        "discovery.peer_timeout",
        "discovery.bootstrap_nodes[1]",
        "discovery.bootstrap_nodes[2]",
    ] {
        assert!(keys.contains(&key), "{key} not reported in {keys:?}");
    }
    let no_port = list
        .iter()
        .find(|i| i.key == "discovery.bootstrap_nodes[1]")
        .unwrap();
    assert_eq!(no_port.value, "\"no-port\"");
    assert!(matches!(no_port.origin, Origin::File(_)), "{no_port}");
}

#[test]
fn wrong_types_are_refused_with_the_key() {
    let cases = [
        (
            "SORCHA_PEER__DISCOVERY__MAX_PEERS_IN_LIST",
            "lots",
            "discovery.max_peers_in_list",
        ),
        (
            "SORCHA_PEER__DISTRIBUTION__ENABLE_COMPRESSION",
            "maybe",
            "distribution.enable_compression",
        ),
        (
            "SORCHA_PEER__DISCOVERY__PEER_TIMEOUT",
            "30",
            "discovery.peer_timeout",
        ),
        (
            "SORCHA_PEER__DISCOVERY__REFRESH_INTERVAL",
            "soon",
            "discovery.refresh_interval",
        ),
        (
            "SORCHA_PEER__COMMUNICATION__PREFERRED_PROTOCOL",
            "pigeon",
            "communication.preferred_protocol",
        ),
    ];
    for (var, value, key) in cases {
        let bad = one_refusal(&Sources {
            env: env(&[(var, value)]),
            ..Default::default()
        });
        assert_eq!(bad.key, key, "{bad}");
        assert_eq!(bad.origin, Origin::Env(var.into()));
    }
    let bare = one_refusal(&Sources {
        env: env(&[("SORCHA_PEER__DISCOVERY__PEER_TIMEOUT", "30")]),
        ..Default::default()
    });
    assert!(
        bare.problem.contains("\"30s\""),
        "the fix is suggested: {bare}"
    );
}

#[test]
fn unknown_keys_are_refused_wherever_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let bad = one_refusal(&Sources {
        file: Some(file(&dir, "c.toml", "[discovery]\nbootstrap = []\n")),
        ..Default::default()
    });
    assert_eq!(bad.key, "discovery.bootstrap");
    assert!(bad.problem.contains("unknown field"), "{bad}");

    let bad = one_refusal(&Sources {
        file: Some(file(&dir, "top.toml", "colour = \"blue\"\n")),
        ..Default::default()
    });
    assert_eq!(bad.key, "colour");

    let bad = one_refusal(&Sources {
        env: env(&[("SORCHA_PEER__NETWORK__LISTEN_PORT", "5001")]),
        ..Default::default()
    });
    assert_eq!(bad.key, "network.listen_port");
    assert_eq!(
        bad.origin,
        Origin::Env("SORCHA_PEER__NETWORK__LISTEN_PORT".into())
    );

    let bad = one_refusal(&Sources {
        env: env(&[("SORCHA_PEER__NODE_ID__X", "1")]),
        ..Default::default()
    });
    assert!(bad.problem.contains("not a section"), "{bad}");
}

#[test]
fn unparsable_addresses_are_refused() {
    for (key, value) in [
        ("network.listen", "localhost:abc"),
        ("network.http_listen", "300.1.1.1:80"),
        ("address.external_address", "not an address!"),
    ] {
        let bad = one_refusal(&Sources {
            flags: vec![("--flag", key.into(), Value::String(value.into()))],
            ..Default::default()
        });
        assert_eq!(bad.key, key, "{bad}");
        assert_eq!(bad.origin, Origin::Flag("--flag"));
    }
    let same = one_refusal(&Sources {
        flags: vec![
            (
                "--listen",
                "network.listen".into(),
                Value::String("127.0.0.1:6000".into()),
            ),
            (
                "--http-listen",
                "network.http_listen".into(),
                Value::String("127.0.0.1:6000".into()),
            ),
        ],
        ..Default::default()
    });
    assert!(same.problem.contains("must differ"), "{same}");
}

#[test]
fn unreadable_and_malformed_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    let err = load(&Sources {
        file: Some(missing.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("absent.toml"), "{err}");

    let err = load(&Sources {
        file: Some(file(&dir, "broken.toml", "[discovery\nmin = 1")),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");

    let err = load(&Sources {
        file: Some(file(&dir, "broken.json", "{\"PeerService\": ")),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
}

#[test]
fn sorcha_appsettings_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{
      "Logging": { "LogLevel": { "Default": "Information" } },
      "PeerService": {
        "Enabled": true,
        "NodeId": "sorcha-node-1",
        "ListenPort": 6001,
        "NetworkAddress": { "PreferredProtocol": "IPv6", "StunServers": [] },
        "PeerDiscovery": {
          "BootstrapNodes": ["https://seed.example.org:5001", "10.0.0.9:5001"],
          "RefreshIntervalMinutes": 5,
          "MinHealthyPeers": 2,
          "PeerTimeoutSeconds": 10
        },
        "communication": { "preferredProtocol": "GrpcStream", "CircuitBreakerResetMinutes": 2 },
        "TransactionDistribution": { "FanoutFactor": 4, "TransactionCacheTTL": 600 },
        "OfflineMode": { "MaxQueueSize": 500, "PersistencePath": "./data/tx_queue.db" }
      }
    }"#;
    let loaded = load(&Sources {
        file: Some(file(&dir, "appsettings.json", json)),
        ..Default::default()
    })
    .unwrap();
    let c = &loaded.config;
    assert_eq!(c.node_id, "sorcha-node-1");
    assert_eq!(c.network.listen.port(), 6001);
    assert_eq!(c.address.preferred_protocol, IpFamily::Ipv6);
    assert!(c.address.stun_servers.is_empty());
    assert_eq!(c.discovery.bootstrap_nodes.len(), 2);
    assert_eq!(c.discovery.refresh_interval, Duration::from_secs(300));
    assert_eq!(c.discovery.peer_timeout, Duration::from_secs(10));
    assert_eq!(
        c.communication.circuit_breaker_reset,
        Duration::from_secs(120)
    );
    assert_eq!(c.distribution.fanout, 4);
    assert_eq!(
        c.distribution.transaction_cache_ttl,
        Duration::from_secs(600)
    );
    assert_eq!(c.offline.max_queue_size, 500);
    assert!(loaded.notes.iter().any(|n| n.contains("PersistencePath")));
    assert!(matches!(
        loaded.origins.get("distribution.fanout"),
        Some(Origin::SorchaFile { key, .. }) if key == "PeerService.TransactionDistribution.FanoutFactor"
    ));
}

#[test]
fn bad_sorcha_values_name_the_sorcha_key() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = file(
        &dir,
        "a.json",
        r#"{"PeerService": {"PeerDiscovery": {"Bootstrap": []}}}"#,
    );
    let err = load(&Sources {
        file: Some(unknown),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("PeerService.PeerDiscovery.Bootstrap"),
        "{err}"
    );

    let out_of_range = file(
        &dir,
        "b.json",
        r#"{"PeerService": {"PeerDiscovery": {"MinHealthyPeers": 500}}}"#,
    );
    let bad = one_refusal(&Sources {
        file: Some(out_of_range),
        ..Default::default()
    });
    assert_eq!(bad.key, "discovery.min_healthy_peers");
    assert!(
        bad.origin
            .to_string()
            .contains("PeerService.PeerDiscovery.MinHealthyPeers"),
        "{bad}"
    );

    let wrong_type = file(
        &dir,
        "c.json",
        r#"{"PeerService": {"PeerDiscovery": {"RefreshIntervalMinutes": "often"}}}"#,
    );
    let err = load(&Sources {
        file: Some(wrong_type),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("RefreshIntervalMinutes"), "{err}");

    let no_section = file(&dir, "d.json", r#"{"Logging": {}}"#);
    let err = load(&Sources {
        file: Some(no_section),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("PeerService"), "{err}");
}

#[test]
fn bootstrap_addresses_parse() {
    let ok: BootstrapAddr = "https://Seed.Example.org:5001/".parse().unwrap();
    assert_eq!(ok.to_string(), "seed.example.org:5001");
    let v6: BootstrapAddr = "[fd00::5]:5001".parse().unwrap();
    assert_eq!(v6.to_string(), "[fd00::5]:5001");
    for bad in [
        "seed.example.org",
        "fd00::5:5001",
        "host:0",
        "host:99999",
        "0.0.0.0:5001",
        ":5001",
    ] {
        assert!(bad.parse::<BootstrapAddr>().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn the_preferred_protocol_reaches_the_link_machine_and_must_be_served() {
    use sorcha_peer_core::link::Via;
    let loaded = load(&Sources {
        env: env(&[
            ("SORCHA_PEER__COMMUNICATION__PREFERRED_PROTOCOL", "grpc"),
            ("SORCHA_PEER__REGISTERS", "reg-a, reg-b"),
        ]),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(loaded.config.node().link.prefer, Via::Unary);
    assert_eq!(loaded.config.registers, vec!["reg-a", "reg-b"]);
    let bad = one_refusal(&Sources {
        env: env(&[
            ("SORCHA_PEER__COMMUNICATION__PREFERRED_PROTOCOL", "rest"),
            ("SORCHA_PEER__COMMUNICATION__SERVE", "grpc_stream,grpc"),
        ]),
        ..Default::default()
    });
    assert_eq!(bad.key, "communication.preferred_protocol", "{bad}");
    let long = "r".repeat(200);
    let bad = one_refusal(&Sources {
        env: env(&[("SORCHA_PEER__REGISTERS", long.as_str())]),
        ..Default::default()
    });
    assert_eq!(bad.key, "registers[0]", "{bad}");
}

#[test]
fn bad_limits_are_refused_with_their_key() {
    for (var, key, allowed) in [
        (
            "SORCHA_PEER__LIMITS__MEMBERSHIP_PER_SECOND",
            "limits.membership_per_second",
            "between 1 and",
        ),
        (
            "SORCHA_PEER__LIMITS__RECEIVED_BYTES_PER_SECOND",
            "limits.received_bytes_per_second",
            "between 65536 and",
        ),
        (
            "SORCHA_PEER__LIMITS__UPLOAD_BYTES_PER_SECOND",
            "limits.upload_bytes_per_second",
            "0 (unlimited) or between 65536",
        ),
        (
            "SORCHA_PEER__LIMITS__MAX_CONNECTIONS_PER_ADDRESS",
            "limits.max_connections_per_address",
            "between 1 and 512",
        ),
    ] {
        let value = if key.ends_with("per_address") {
            "513"
        } else {
            "1000"
        };
        let value = if key.ends_with("membership_per_second") {
            "0"
        } else {
            value
        };
        let sources = Sources {
            env: env(&[(var, value)]),
            ..Default::default()
        };
        let bad = one_refusal(&sources);
        assert_eq!(bad.key, key);
        assert!(bad.problem.contains(allowed), "{bad}");
    }
    let sources = Sources {
        env: env(&[("SORCHA_PEER__LIMITS__HEADER_TIMEOUT", "0s")]),
        ..Default::default()
    };
    assert_eq!(one_refusal(&sources).key, "limits.header_timeout");
    let fine = Sources {
        env: env(&[("SORCHA_PEER__LIMITS__UPLOAD_BYTES_PER_SECOND", "0")]),
        ..Default::default()
    };
    assert!(load(&fine).is_ok(), "0 is unlimited");
}

#[test]
fn bad_scoring_and_dialling_values_are_refused_with_the_key() {
    let sources = Sources {
        env: env(&[
            ("SORCHA_PEER__SCORING__BAN_THRESHOLD", "10.0"),
            ("SORCHA_PEER__SCORING__BAN_CAP", "1s"),
            ("SORCHA_PEER__DISCOVERY__DIAL_RATE_PER_SECOND", "0"),
        ]),
        ..Default::default()
    };
    let mut keys: Vec<String> = refused(&sources).into_iter().map(|i| i.key).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "discovery.dial_rate_per_second",
            "scoring.ban_cap",
            "scoring.ban_threshold"
        ]
    );
    let node = Config::default().node();
    assert_eq!(node.score, sorcha_peer_core::score::ScoreConfig::default());
    assert_eq!(node.membership.dial_rate_per_second, 5);
}
