//! `--hosts netns`: one network namespace per node, each with its own address on a veth to a
//! bridge in the lab's namespace. Everything created here is removed when the [`Netns`] guard
//! drops, whatever ended the run. Partitions are blackhole routes inside the namespaces (no
//! iptables); a slow link is a `tc netem` delay on the node's veth. Wire bytes are the veth's
//! own counters, less the lab's traffic with the node (counted by an nftables counter in each
//! namespace; nothing is filtered).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The /16 the lab's namespaces live in; the bridge holds `.0.1`, node `i` holds `i + 2`.
const SUBNET: (u8, u8) = (10, 203);
const PREFIX_LEN: u8 = 16;
/// Nodes one subnet can address.
pub const MAX_NODES: usize = 65_000;

/// Why namespaces could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Namespaces, veths and bridges need CAP_NET_ADMIN and CAP_SYS_ADMIN.
    #[error(
        "--hosts netns needs root (it creates network namespaces, veths and a bridge); run as root or use --hosts loopback"
    )]
    NotRoot,
    /// The lab's subnet is already in use on this machine.
    #[error("{0}.{1}.0.0/16 is already assigned on this machine; --hosts netns needs it free", SUBNET.0, SUBNET.1)]
    SubnetInUse,
    /// An `ip` or `tc` command failed.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
}

/// The namespaces, veths and bridge of one run; removed on drop.
#[derive(Debug)]
pub struct Netns {
    tag: String,
    bridge: Option<String>,
    namespaces: Vec<String>,
    host_links: Vec<String>,
}

impl Netns {
    /// Creates `count` namespaces wired to one bridge. On error, what was created is removed.
    pub fn create(count: usize) -> Result<Self, NetnsError> {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            return Err(NetnsError::NotRoot);
        }
        let prefix = format!("{}.{}.", SUBNET.0, SUBNET.1);
        if run(&["ip", "-4", "-o", "addr", "show"])?.contains(&format!(" {prefix}")) {
            return Err(NetnsError::SubnetInUse);
        }
        let tag = format!("pl{}", std::process::id() % 100_000);
        let mut net = Self {
            tag: tag.clone(),
            bridge: None,
            namespaces: Vec::new(),
            host_links: Vec::new(),
        };
        let bridge = format!("{tag}br");
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        net.bridge = Some(bridge.clone());
        let host_cidr = format!("{}/{PREFIX_LEN}", host_ip());
        run(&["ip", "addr", "add", &host_cidr, "dev", &bridge])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        for i in 0..count {
            net.add_node(i, &bridge)?;
        }
        Ok(net)
    }

    fn add_node(&mut self, i: usize, bridge: &str) -> Result<(), NetnsError> {
        let ns = self.namespace(i);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        let (host, inner) = (format!("{}h{i}", self.tag), self.inner_link(i));
        run(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", &ns,
        ])?;
        self.host_links.push(host.clone());
        run(&["ip", "link", "set", &host, "master", bridge])?;
        run(&["ip", "link", "set", &host, "up"])?;
        let cidr = format!("{}/{PREFIX_LEN}", node_ip(i));
        run(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", &inner])?;
        run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
        // Without nftables the wire figures keep the lab's own traffic (`lab_traffic_excluded`
        // says so), which only sorcha-peer's nodes have (the API, the streams): said once.
        if let Err(e) = nft(&ns, &lab_counters_ruleset())
            && !NFT_WARNED.swap(true, Ordering::Relaxed)
        {
            eprintln!(
                "peer-lab: WARNING: nftables could not count the lab's own traffic ({e}); the \
                 wire figures include it (lab_traffic_excluded: false). Install nftables \
                 (apt-get install nftables) for comparable figures."
            );
        }
        Ok(())
    }

    pub fn namespace(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn inner_link(&self, i: usize) -> String {
        format!("{}p{i}", self.tag)
    }

    /// The command prefix that runs a program inside node `i`'s namespace.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec"]
            .map(str::to_owned)
            .into_iter()
            .chain([self.namespace(i)])
            .collect()
    }

    /// Cuts every link between nodes of different groups (blackhole routes both ways).
    pub fn partition(&self, groups: &[Vec<usize>]) -> Result<(), NetnsError> {
        self.routes(groups, "replace")
    }

    /// Removes the routes [`Netns::partition`] added for `groups`.
    pub fn heal(&self, groups: &[Vec<usize>]) -> Result<(), NetnsError> {
        self.routes(groups, "del")
    }

    fn routes(&self, groups: &[Vec<usize>], verb: &str) -> Result<(), NetnsError> {
        for (g, group) in groups.iter().enumerate() {
            let others: Vec<usize> = groups
                .iter()
                .enumerate()
                .filter(|(h, _)| *h != g)
                .flat_map(|(_, nodes)| nodes.iter().copied())
                .collect();
            let batch: String = others
                .iter()
                .map(|o| format!("route {verb} blackhole {}/32\n", node_ip(*o)))
                .collect();
            for node in group {
                run_batch(&self.namespace(*node), &batch, verb == "del")?;
            }
        }
        Ok(())
    }

    /// Delays every packet node `i` sends by `delay` (netem), or removes the delay (`None`).
    pub fn delay(&self, i: usize, delay: Option<Duration>) -> Result<(), NetnsError> {
        let (ns, link) = (self.namespace(i), self.inner_link(i));
        match delay {
            Some(d) => {
                let ms = format!("{}ms", d.as_millis());
                let args = [
                    "ip", "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", &link, "root",
                    "netem", "delay", &ms,
                ];
                run(&args).map(drop)
            }
            None => {
                let args = [
                    "ip", "netns", "exec", &ns, "tc", "qdisc", "del", "dev", &link, "root",
                ];
                run(&args).map(drop)
            }
        }
    }
}

impl Netns {
    /// Every byte node `i`'s veth carried so far (sysfs interface counters, Ethernet, IP and
    /// TCP headers included), and how much of it was the lab's own traffic with the node
    /// (HTTP API, streams, scrapes): what [`WireBytes::between_nodes`] leaves out.
    pub fn wire_bytes(&self, i: usize) -> Result<WireBytes, NetnsError> {
        let ns = self.namespace(i);
        let interface = interface_bytes(&ns, &self.inner_link(i))?;
        let lab = run(&[
            "ip", "netns", "exec", &ns, "nft", "-j", "list", "counters", "table", "ip", LAB_TABLE,
        ])
        .ok()
        .and_then(|json| parse_lab_counters(&json));
        Ok(WireBytes { interface, lab })
    }
}

/// One interface's counters, or a difference of two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct InterfaceBytes {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
}

impl InterfaceBytes {
    /// What was counted between `earlier` and `self` (counters only grow).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
        }
    }
}

/// A node's veth counters with the lab's share of them, as [`Netns::wire_bytes`] reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireBytes {
    pub interface: InterfaceBytes,
    /// IP packets between the node and the lab's address (nftables counters: IP length,
    /// so without the Ethernet header); `None` when nftables was unavailable.
    pub lab: Option<InterfaceBytes>,
}

/// The Ethernet header a veth counts for every frame and nftables (IP layer) does not.
const ETHERNET_HEADER: u64 = 14;

impl WireBytes {
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            interface: self.interface.since(&earlier.interface),
            lab: self
                .lab
                .zip(earlier.lab)
                .map(|(now, then)| now.since(&then)),
        }
    }

    /// Sent and received bytes between this node and other nodes: the interface's counters
    /// less the lab's packets (with their Ethernet headers). The lab's traffic stays in when
    /// it was not counted (`lab` is `None`).
    pub fn between_nodes(&self) -> (u64, u64) {
        let lab = self.lab.unwrap_or_default();
        let framed = |bytes: u64, packets: u64| bytes + packets * ETHERNET_HEADER;
        (
            self.interface
                .tx_bytes
                .saturating_sub(framed(lab.tx_bytes, lab.tx_packets)),
            self.interface
                .rx_bytes
                .saturating_sub(framed(lab.rx_bytes, lab.rx_packets)),
        )
    }
}

/// The counters of `link` inside namespace `ns` (`ip -j -s link show`: the kernel's
/// interface statistics, the same as /sys/class/net/LINK/statistics inside the namespace).
pub fn interface_bytes(ns: &str, link: &str) -> Result<InterfaceBytes, NetnsError> {
    let json = run(&["ip", "-n", ns, "-j", "-s", "link", "show", "dev", link])?;
    parse_link_stats(&json).ok_or_else(|| NetnsError::Command {
        command: format!("ip -n {ns} -j -s link show dev {link}"),
        stderr: "no stats64 in its output".to_owned(),
    })
}

/// `[{"stats64": {"rx": {"bytes": .., "packets": ..}, "tx": {..}}, ..}]`.
pub fn parse_link_stats(json: &str) -> Option<InterfaceBytes> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let stats = value.get(0)?.get("stats64")?;
    let field = |dir: &str, key: &str| stats.get(dir)?.get(key)?.as_u64();
    Some(InterfaceBytes {
        tx_bytes: field("tx", "bytes")?,
        rx_bytes: field("rx", "bytes")?,
        tx_packets: field("tx", "packets")?,
        rx_packets: field("rx", "packets")?,
    })
}

/// The nftables table in every node's namespace that counts the lab's packets.
const LAB_TABLE: &str = "peerlab";

/// Two named counters: IP packets to and from the lab's address (the bridge).
fn lab_counters_ruleset() -> String {
    let lab = host_ip();
    format!(
        "table ip {LAB_TABLE} {{\n\
         counter lab_out {{ }}\n\
         counter lab_in {{ }}\n\
         chain out {{ type filter hook output priority 0; policy accept; ip daddr {lab} counter name \"lab_out\"; }}\n\
         chain in {{ type filter hook input priority 0; policy accept; ip saddr {lab} counter name \"lab_in\"; }}\n\
         }}\n"
    )
}

/// `nft -j list counters`: lab_out as tx, lab_in as rx.
pub fn parse_lab_counters(json: &str) -> Option<InterfaceBytes> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut out = InterfaceBytes::default();
    let (mut seen_out, mut seen_in) = (false, false);
    for item in value.get("nftables")?.as_array()? {
        let Some(counter) = item.get("counter") else {
            continue;
        };
        let bytes = counter.get("bytes").and_then(|b| b.as_u64()).unwrap_or(0);
        let packets = counter.get("packets").and_then(|p| p.as_u64()).unwrap_or(0);
        match counter.get("name").and_then(|n| n.as_str()) {
            Some("lab_out") => (out.tx_bytes, out.tx_packets, seen_out) = (bytes, packets, true),
            Some("lab_in") => (out.rx_bytes, out.rx_packets, seen_in) = (bytes, packets, true),
            _ => {}
        }
    }
    (seen_out && seen_in).then_some(out)
}

/// Whether the missing-nftables warning was printed already.
static NFT_WARNED: AtomicBool = AtomicBool::new(false);

/// Loads `ruleset` into namespace `ns` (`nft -f -`).
fn nft(ns: &str, ruleset: &str) -> Result<(), NetnsError> {
    ip_with_input(&["netns", "exec", ns, "nft", "-f", "-"], ruleset, false)
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..) {
            quiet(&["ip", "netns", "del", &ns]);
        }
        // Deleting a namespace deletes its veth end and so the pair; these are for the rest.
        for link in self.host_links.drain(..) {
            if run(&["ip", "link", "show", &link]).is_ok() {
                quiet(&["ip", "link", "del", &link]);
            }
        }
        if let Some(bridge) = self.bridge.take() {
            quiet(&["ip", "link", "del", &bridge]);
        }
    }
}

/// The bridge's address: the lab reaches every node from here.
pub fn host_ip() -> Ipv4Addr {
    Ipv4Addr::new(SUBNET.0, SUBNET.1, 0, 1)
}

/// Node `i`'s address.
pub fn node_ip(i: usize) -> Ipv4Addr {
    let n = i + 2;
    Ipv4Addr::new(SUBNET.0, SUBNET.1, (n / 256) as u8, (n % 256) as u8)
}

fn run(args: &[&str]) -> Result<String, NetnsError> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetnsError::Command {
            command: args.join(" "),
            stderr: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(NetnsError::Command {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `ip -n NS -batch -` with `commands` on stdin; `-force` keeps going past errors
/// (deleting a route that is already gone).
fn run_batch(ns: &str, commands: &str, force: bool) -> Result<(), NetnsError> {
    let mut args = vec!["-n", ns];
    if force {
        args.push("-force");
    }
    args.extend(["-batch", "-"]);
    ip_with_input(&args, commands, force)
}

/// Runs `ip ARGS` with `input` on its standard input; a failure exit is an error naming the
/// command and its stderr, unless `tolerate_failure`.
fn ip_with_input(args: &[&str], input: &str, tolerate_failure: bool) -> Result<(), NetnsError> {
    let describe = || format!("ip {}", args.join(" "));
    let fail = |e: std::io::Error| NetnsError::Command {
        command: describe(),
        stderr: e.to_string(),
    };
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(fail)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(fail)?;
    }
    let output = child.wait_with_output().map_err(fail)?;
    if !output.status.success() && !tolerate_failure {
        return Err(NetnsError::Command {
            command: describe(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Teardown: a failure is reported, never fatal (the rest must still be removed).
fn quiet(args: &[&str]) {
    if let Err(e) = run(args) {
        eprintln!("peer-lab: cleanup: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_in_the_subnet_and_distinct() {
        assert_eq!(host_ip().to_string(), "10.203.0.1");
        assert_eq!(node_ip(0).to_string(), "10.203.0.2");
        assert_eq!(node_ip(254).to_string(), "10.203.1.0");
        let all: std::collections::BTreeSet<_> = (0..1000).map(node_ip).collect();
        assert_eq!(all.len(), 1000);
        assert!(!all.contains(&host_ip()));
    }

    #[test]
    fn link_stats_and_lab_counters_parse() {
        let link = r#"[{"ifname":"p0","stats64":{"rx":{"bytes":1000,"packets":10},"tx":{"bytes":3000,"packets":20}}}]"#;
        let interface = parse_link_stats(link).unwrap();
        assert_eq!(
            interface,
            InterfaceBytes {
                tx_bytes: 3000,
                rx_bytes: 1000,
                tx_packets: 20,
                rx_packets: 10
            }
        );
        assert_eq!(parse_link_stats("[]"), None);
        let nft = r#"{"nftables":[{"metainfo":{"version":"1.0.9"}},{"counter":{"family":"ip","name":"lab_out","table":"peerlab","handle":1,"packets":2,"bytes":100}},{"counter":{"family":"ip","name":"lab_in","table":"peerlab","handle":2,"packets":1,"bytes":60}}]}"#;
        let lab = parse_lab_counters(nft).unwrap();
        assert_eq!((lab.tx_bytes, lab.rx_packets), (100, 1));
        let wire = WireBytes {
            interface,
            lab: Some(lab),
        };
        // 3000 - (100 + 2 x 14), 1000 - (60 + 1 x 14).
        assert_eq!(wire.between_nodes(), (2872, 926));
        let later = WireBytes {
            interface: InterfaceBytes {
                tx_bytes: 5000,
                ..interface
            },
            lab: Some(lab),
        };
        assert_eq!(later.since(&wire).between_nodes(), (2000, 0));
    }
}
