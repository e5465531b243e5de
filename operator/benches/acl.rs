//! ACL benchmarks, printed as one table: compile time and serialized size for a fleet, and the
//! latency of one authorization check with the indexed matcher next to the naive linear scan
//! over the same rules (the anchor).
//!
//! Run: `cargo bench -p operator --bench acl` (release profile). `ACL_BENCH_QUICK=1` shrinks
//! the fleets for a smoke run.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use contract::acl::{codec, naive, Matcher, Request};
use crds::cluster::{AclSpec, DefaultAction};
use crds::device::DeviceIdentitySpec;
use crds::policy::{Action, Effect, PolicyRule, Subject, TopicPolicySpec};
use crds::reference::ClusterRef;
use crds::selector::LabelSelector;
use crds::{DeviceIdentity, TopicPolicy};
use operator::acl::{compile, ClusterAcl, Compiled};

const SITES: usize = 100;

/// One subject as minimal JSON: `[name, state, [[origin, pattern], ...]]`.
type JsonSubject<'a> = (&'a str, u8, Vec<(u32, &'a str)>);

fn fleet(n: usize) -> Vec<DeviceIdentity> {
    (0..n)
        .map(|i| {
            let mut d = DeviceIdentity::new(
                &format!("dev-{i:07}"),
                DeviceIdentitySpec {
                    cluster_ref: ClusterRef {
                        name: "bench".into(),
                    },
                    device_id: format!("dev-{i:07}"),
                    ..Default::default()
                },
            );
            d.metadata.namespace = Some("ns".into());
            d.metadata.labels = Some(BTreeMap::from([
                ("site".to_string(), format!("site-{:03}", i % SITES)),
                ("class".to_string(), "sensor".to_string()),
            ]));
            d
        })
        .collect()
}

fn rule(effect: Effect, actions: &[Action], topic: &str) -> PolicyRule {
    PolicyRule {
        effect,
        actions: actions.to_vec(),
        topics: vec![topic.to_string()],
        qos: None,
        retain: None,
    }
}

/// Five rules per device, all with placeholders (so each expands once per device).
fn policies() -> Vec<TopicPolicy> {
    let mut p = TopicPolicy::new(
        "sensors",
        TopicPolicySpec {
            cluster_ref: ClusterRef {
                name: "bench".into(),
            },
            subjects: vec![Subject {
                device_selector: Some(LabelSelector {
                    match_labels: BTreeMap::from([("class".into(), "sensor".into())]),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            rules: vec![
                PolicyRule {
                    qos: Some(vec![0, 1]),
                    ..rule(
                        Effect::Allow,
                        &[Action::Publish],
                        "sites/${label:site}/devices/${deviceId}/telemetry/#",
                    )
                },
                rule(
                    Effect::Allow,
                    &[Action::Subscribe],
                    "sites/${label:site}/devices/${deviceId}/commands/#",
                ),
                PolicyRule {
                    retain: Some(true),
                    ..rule(
                        Effect::Allow,
                        &[Action::Publish],
                        "devices/${deviceId}/state",
                    )
                },
                rule(
                    Effect::Deny,
                    &[Action::Publish],
                    "sites/${label:site}/devices/${deviceId}/telemetry/secret",
                ),
                rule(
                    Effect::Allow,
                    &[Action::Publish, Action::Subscribe],
                    "fleet/${label:site}/${deviceId}/+/events",
                ),
            ],
        },
    );
    p.metadata.namespace = Some("ns".into());
    vec![p]
}

fn compile_fleet(devices: &[DeviceIdentity], policies: &[TopicPolicy]) -> Compiled {
    let acl = AclSpec {
        default_action: DefaultAction::Deny,
        policy_selector: None,
    };
    compile(
        ClusterAcl {
            namespace: "ns",
            name: "bench",
            acl: &acl,
        },
        policies,
        devices,
    )
    .expect("bench fleet compiles")
}

fn median_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        times.push(t.elapsed());
        last = Some(v);
    }
    times.sort();
    (times[runs / 2], last.expect("runs > 0"))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A realistic mix: own telemetry (allowed), a neighbour's telemetry (denied by default), the
/// denied secret topic, own commands subscription (allowed), a site-wide subscription (denied).
fn requests(devices: usize, n: usize) -> Vec<(String, bool, String, u8)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            let d = rng.below(devices);
            let id = format!("dev-{d:07}");
            let site = format!("site-{:03}", d % SITES);
            let (publish, topic) = match rng.below(100) {
                0..=49 => (true, format!("sites/{site}/devices/{id}/telemetry/temp")),
                50..=64 => (
                    true,
                    format!(
                        "sites/{site}/devices/dev-{:07}/telemetry/temp",
                        (d + 1) % devices
                    ),
                ),
                65..=69 => (true, format!("sites/{site}/devices/{id}/telemetry/secret")),
                70..=89 => (false, format!("sites/{site}/devices/{id}/commands/#")),
                _ => (false, format!("sites/{site}/devices/+/telemetry/#")),
            };
            (id, publish, topic, (rng.below(2)) as u8)
        })
        .collect()
}

fn req(r: &(String, bool, String, u8)) -> Request<'_> {
    if r.1 {
        Request::publish(&r.0, &r.2, r.3, false)
    } else {
        Request::subscribe(&r.0, &r.2, r.3)
    }
}

/// Per-call latencies (ns), sorted.
fn latencies(
    reqs: &[(String, bool, String, u8)],
    mut f: impl FnMut(&Request<'_>) -> bool,
) -> Vec<u64> {
    let mut out: Vec<u64> = reqs
        .iter()
        .map(|r| {
            let q = req(r);
            let t = Instant::now();
            black_box(f(black_box(&q)));
            t.elapsed().as_nanos() as u64
        })
        .collect();
    out.sort_unstable();
    out
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ns(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{:.2} ms", v as f64 / 1e6)
    } else if v >= 10_000 {
        format!("{:.1} µs", v as f64 / 1e3)
    } else {
        format!("{v} ns")
    }
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn main() {
    let quick = std::env::var_os("ACL_BENCH_QUICK").is_some();
    let (small, big, large) = if quick {
        (2_000, 10_000, 20_000)
    } else {
        (2_000, 100_000, 200_000)
    };
    let policies = policies();
    println!("ACL benchmark (release build; 5 rules per device, all with placeholders)");
    println!("{:<58} {:>14} {:>16}", "measure", "value", "target/anchor");

    // 1. Compile.
    let devices = fleet(big);
    let (t, compiled) = median_of(3, || compile_fleet(&devices, &policies));
    let rules = compiled.rules.rule_count();
    println!(
        "{:<58} {:>14} {:>16}",
        format!("compile {big} devices x 5 rules ({rules} rules), median of 3"),
        format!("{} ms", t.as_millis()),
        "< 1000 ms"
    );
    let (t_enc, bytes) = median_of(3, || compiled.encode());
    println!(
        "{:<58} {:>14} {:>16}",
        "  serialized size (format v1)",
        mb(bytes.len()),
        format!("{:.1} B/rule", bytes.len() as f64 / rules as f64)
    );
    // Anchor for the format choice: the same set as minimal JSON ([name, state, [[origin, pattern]]]).
    let json: Vec<JsonSubject<'_>> = compiled
        .rules
        .subjects()
        .iter()
        .map(|s| {
            let rules = s
                .rules
                .iter()
                .map(|r| (r.origin, r.pattern.as_str()))
                .collect();
            (s.name.as_str(), s.state as u8, rules)
        })
        .collect();
    let json = serde_json::to_vec(&json).expect("serializes");
    println!(
        "{:<58} {:>14} {:>16}",
        "  same set as minimal JSON (anchor)",
        mb(json.len()),
        format!("{:.1} B/rule", json.len() as f64 / rules as f64)
    );
    drop(json);
    println!(
        "{:<58} {:>14}",
        "  encode",
        format!("{} ms", t_enc.as_millis())
    );
    let (t_dec, decoded) = median_of(3, || codec::decode(&bytes).expect("decodes"));
    assert_eq!(decoded, compiled.rules);
    println!(
        "{:<58} {:>14}",
        "  decode + verify (broker load)",
        format!("{} ms", t_dec.as_millis())
    );
    drop((decoded, compiled, devices));

    // 2. Check latency with >= 1M rules, indexed vs naive scan.
    let devices = fleet(large);
    let compiled = compile_fleet(&devices, &policies);
    drop(devices);
    let rules = compiled.rules.rule_count();
    let (t, matcher) = median_of(1, || Matcher::new(&compiled.rules));
    println!(
        "{:<58} {:>14} {:>16}",
        format!("index build, {rules} rules ({} devices)", large),
        format!("{} ms", t.as_millis()),
        format!("{} heap", mb(matcher.heap_bytes()))
    );
    let reqs = requests(large, if quick { 100_000 } else { 1_000_000 });
    // Warm up, and check the two implementations agree on this mix.
    for r in reqs.iter().take(50) {
        assert_eq!(
            matcher.decide(&req(r)).effect,
            naive::decide(&compiled.rules, &req(r)).effect
        );
    }
    let timer = latencies(&reqs[..10_000], |_| true);
    let fast = latencies(&reqs, |q| matcher.decide(q).is_allowed());
    let naive_n = if quick { 50 } else { 200 };
    let slow = latencies(&reqs[..naive_n], |q| {
        naive::decide(&compiled.rules, q).is_allowed()
    });
    let allowed = reqs
        .iter()
        .filter(|r| matcher.decide(&req(r)).is_allowed())
        .count();
    println!(
        "{:<58} {:>14} {:>16}",
        format!(
            "check, indexed, {rules} rules: median ({} reqs)",
            reqs.len()
        ),
        ns(pct(&fast, 0.5)),
        "< 1 µs"
    );
    println!("{:<58} {:>14}", "  p99", ns(pct(&fast, 0.99)));
    println!(
        "{:<58} {:>14}",
        format!("check, naive scan, same rules: median ({naive_n} reqs)"),
        ns(pct(&slow, 0.5))
    );
    println!("{:<58} {:>14}", "  p99", ns(pct(&slow, 0.99)));
    println!(
        "{:<58} {:>14}",
        "  ratio naive / indexed (medians)",
        format!(
            "{:.0}x",
            pct(&slow, 0.5) as f64 / pct(&fast, 0.5).max(1) as f64
        )
    );
    println!(
        "{:<58} {:>14}",
        "  timer overhead included above (median)",
        ns(pct(&timer, 0.5))
    );
    let hot: Vec<_> = requests(64, 200_000);
    let hot = latencies(&hot, |q| matcher.decide(q).is_allowed());
    println!(
        "{:<58} {:>14} {:>16}",
        "  same set, requests from 64 devices only: median / p99",
        ns(pct(&hot, 0.5)),
        ns(pct(&hot, 0.99))
    );
    println!(
        "{:<58} {:>14}",
        "  requests allowed in the mix",
        format!("{:.0}%", allowed as f64 * 100.0 / reqs.len() as f64)
    );
    drop((matcher, compiled));

    // 3. Independence from rule count: the same mix against a small fleet.
    let devices = fleet(small);
    let compiled = compile_fleet(&devices, &policies);
    let matcher = Matcher::new(&compiled.rules);
    let reqs = requests(small, 200_000);
    let fast = latencies(&reqs, |q| matcher.decide(q).is_allowed());
    println!(
        "{:<58} {:>14} {:>16}",
        format!(
            "check, indexed, {} rules: median / p99",
            compiled.rules.rule_count()
        ),
        ns(pct(&fast, 0.5)),
        ns(pct(&fast, 0.99))
    );
}
