//! The few parts of the Prometheus text format the lab reads: samples with their labels, and
//! sums and per-label totals of a metric between two scrapes.

use std::collections::BTreeMap;

/// One line of a scrape: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a scrape. Comments, blank and malformed lines are skipped: a metric the
/// lab cannot read must not stop a benchmark.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        Self { samples }
    }

    /// The sum of every series of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// The series of `name` summed by the value of `label` (missing label: "").
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.name == name) {
            let key = s.labels.get(label).cloned().unwrap_or_default();
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }

    /// What every counter gained from `before` to `self`, series by series; a series that
    /// went down (a restart) counts from zero.
    pub fn delta(&self, before: &Scrape) -> Scrape {
        let samples = self
            .samples
            .iter()
            .map(|s| {
                let old = before
                    .samples
                    .iter()
                    .find(|b| b.name == s.name && b.labels == s.labels)
                    .map_or(0.0, |b| b.value);
                let value = if s.value >= old {
                    s.value - old
                } else {
                    s.value
                };
                Sample { value, ..s.clone() }
            })
            .collect();
        Scrape { samples }
    }

    /// Adds `other`'s samples (summing equal series): one node's incarnations together.
    pub fn add(&mut self, other: &Scrape) {
        for s in &other.samples {
            match self
                .samples
                .iter_mut()
                .find(|m| m.name == s.name && m.labels == s.labels)
            {
                Some(mine) => mine.value += s.value,
                None => self.samples.push(s.clone()),
            }
        }
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_at(line.find(char::is_whitespace)?),
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.find('{') {
        Some(open) => (
            &series[..open],
            parse_labels(&series[open + 1..series.len() - 1])?,
        ),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y \"q\""` into a map; escapes `\\`, `\"` and `\n` as the format defines.
fn parse_labels(raw: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = raw.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(',' | ' ')) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP bandwidth_sent_bytes Bytes sent to peers
# TYPE bandwidth_sent_bytes counter
bandwidth_sent_bytes{kind="announce"} 1200
bandwidth_sent_bytes{kind="body"} 25600
bandwidth_received_bytes{kind="body",peer="a \"b\", c"} 300
duplicate_bodies_total 3
transaction_distribution_latency_bucket{le="+Inf"} 7
peer_service_status 2 1700000000000
garbage line
"#;

    #[test]
    fn parses_samples_labels_and_values() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.sum("bandwidth_sent_bytes"), 26800.0);
        assert_eq!(s.sum("duplicate_bodies_total"), 3.0);
        assert_eq!(s.sum("peer_service_status"), 2.0);
        let by_kind = s.by_label("bandwidth_sent_bytes", "kind");
        assert_eq!(by_kind["announce"], 1200.0);
        assert_eq!(by_kind["body"], 25600.0);
        let received = &s
            .samples
            .iter()
            .find(|x| x.name == "bandwidth_received_bytes")
            .unwrap()
            .labels;
        assert_eq!(received["peer"], "a \"b\", c");
        assert_eq!(s.sum("transaction_distribution_latency_bucket"), 7.0);
        assert_eq!(s.sum("missing"), 0.0);
    }

    #[test]
    fn deltas_count_restarted_counters_from_zero() {
        let before = Scrape::parse("x{kind=\"a\"} 10\nx{kind=\"b\"} 5\n");
        let after = Scrape::parse("x{kind=\"a\"} 25\nx{kind=\"b\"} 2\nx{kind=\"c\"} 1\n");
        let d = after.delta(&before);
        let by = d.by_label("x", "kind");
        assert_eq!((by["a"], by["b"], by["c"]), (15.0, 2.0, 1.0));
        let mut total = d.clone();
        total.add(&Scrape::parse("x{kind=\"a\"} 1\ny 4\n"));
        assert_eq!(total.by_label("x", "kind")["a"], 16.0);
        assert_eq!(total.sum("y"), 4.0);
    }
}
