//! The ACL semantics of docs/acl.md, one table row per sentence (or several): manifests are
//! compiled as the operator compiles them, each request is decided by the broker's matcher
//! (through `acl explain`), and the first line of the explanation is compared. Every row is
//! also decided by the naive reference, which must agree.

use contract::acl::{naive, Action, Request};
use operator::acl::explain::{explain_compiled, Question, Who};
use operator::acl::{clusters, compile_documents, Compiled};
use operator::manifest::{parse_file, SourceFile};

const FIXTURE: &str = r##"
apiVersion: mqtt.operator.dev/v1alpha1
kind: MqttCluster
metadata: {name: main}
spec:
  acl: {defaultAction: deny}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: MqttCluster
metadata: {name: open}
spec:
  acl:
    defaultAction: allow
    policySelector: {matchLabels: {tier: prod}}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata: {name: d1, labels: {site: lyon, class: sensor}}
spec: {clusterRef: {name: main}, deviceId: d1}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata: {name: d2, labels: {site: paris, class: sensor}}
spec: {clusterRef: {name: main}, deviceId: d2}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata: {name: gw, labels: {site: lyon, class: gateway}}
spec: {clusterRef: {name: main}, deviceId: gw}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata: {name: nosite, labels: {class: sensor}}
spec: {clusterRef: {name: main}, deviceId: nosite}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata: {name: sus, labels: {site: lyon, class: sensor}}
spec: {clusterRef: {name: main}, deviceId: sus, state: Suspended}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata: {name: rev, labels: {site: lyon, class: sensor}}
spec: {clusterRef: {name: main}, deviceId: rev, state: Revoked}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {name: sensors}
spec:
  clusterRef: {name: main}
  subjects: [{deviceSelector: {matchLabels: {class: sensor}}}]
  rules:
    - {effect: allow, actions: [publish], topics: ["sites/${label:site}/devices/${deviceId}/telemetry/#"], qos: [0, 1]}
    - {effect: allow, actions: [subscribe], topics: ["sites/${label:site}/devices/${deviceId}/commands/#"]}
    - {effect: allow, actions: [publish], topics: ["devices/${deviceId}/state"], retain: true}
    - {effect: deny, actions: [publish], topics: ["sites/${label:site}/devices/${deviceId}/telemetry/secret"]}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {name: gateways}
spec:
  clusterRef: {name: main}
  subjects: [{deviceSelector: {matchLabels: {class: gateway}}}]
  rules:
    - {effect: allow, actions: [subscribe], topics: ["sites/${label:site}/devices/+/telemetry/#"]}
    - {effect: allow, actions: [publish, subscribe], topics: ["sites/${label:site}/devices/+/commands/#"]}
    - {effect: deny, actions: [subscribe], topics: ["sites/${label:site}/devices/+/telemetry/private"]}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {name: d1-extra}
spec:
  clusterRef: {name: main}
  subjects: [{device: d1}]
  rules:
    - {effect: allow, actions: [subscribe], topics: ["broadcast/+/news"], qos: [0]}
    - {effect: deny, actions: [subscribe], topics: ["broadcast/secret/news"]}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {name: d2-order}
spec:
  clusterRef: {name: main}
  subjects: [{device: d2}]
  rules:
    - {effect: allow, actions: [publish], topics: ["eq/topic"]}
    - {effect: deny, actions: [publish], topics: ["eq/topic"]}
    - {effect: allow, actions: [publish], topics: ["broad/x/y"]}
    - {effect: deny, actions: [publish], topics: ["broad/#"]}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {name: backend}
spec:
  clusterRef: {name: main}
  subjects: [{user: backend}]
  rules:
    - {effect: allow, actions: [publish, subscribe], topics: ["#"]}
    - {effect: deny, actions: [publish], topics: ["sites/+/devices/+/telemetry/#"]}
    - {effect: allow, actions: [subscribe], topics: ["$SYS/#"]}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {name: users}
spec:
  clusterRef: {name: main}
  subjects: [{user: auditor}, {user: ops}]
  rules:
    - {effect: allow, actions: [publish], topics: ["audit/${deviceId}"]}
    - {effect: allow, actions: [subscribe], topics: ["audit/#", "ops/#", "+/x"]}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {name: sysreader}
spec:
  clusterRef: {name: main}
  subjects: [{user: sysreader}]
  rules:
    - {effect: allow, actions: [subscribe], topics: ["$SYS/#"]}
    - {effect: deny, actions: [publish, subscribe], topics: ["#"]}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {name: everyone}
spec:
  clusterRef: {name: main}
  subjects: [{all: true}]
  rules:
    - {effect: allow, actions: [subscribe], topics: ["public/#"]}
    - {effect: deny, actions: [publish, subscribe], topics: ["public/admin/#"]}
    - {effect: allow, actions: [publish], topics: ["inbox/${deviceId}/#"]}
    - {effect: allow, actions: [publish], topics: ["will/${deviceId}"], qos: [1]}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata: {name: o1}
spec: {clusterRef: {name: open}, deviceId: o1}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: DeviceIdentity
metadata: {name: o2}
spec: {clusterRef: {name: open}, deviceId: o2, state: Suspended}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {name: open-prod, labels: {tier: prod}}
spec:
  clusterRef: {name: open}
  subjects: [{all: true}]
  rules:
    - {effect: deny, actions: [publish], topics: ["forbidden/#"]}
---
apiVersion: mqtt.operator.dev/v1alpha1
kind: TopicPolicy
metadata: {name: open-dev}
spec:
  clusterRef: {name: open}
  subjects: [{all: true}]
  rules:
    - {effect: deny, actions: [publish], topics: ["x/#"]}
"##;

/// How the request is made.
#[derive(Clone, Copy)]
enum Op {
    Pub(u8, bool),
    Will(u8, bool),
    Sub(u8),
}

/// (section of docs/acl.md, cluster, username, is device, op, topic, expected first line)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    Op,
    &'static str,
    &'static str,
);

use Op::*;

#[rustfmt::skip]
const CASES: &[Case] = &[
    // --- Placeholders expand per identity; a rule whose placeholder has no value does not apply.
    ("placeholders", "main", "d1", true, Pub(0, false), "sites/lyon/devices/d1/telemetry/temp", "ALLOW by TopicPolicy/sensors rules[0]"),
    ("placeholders", "main", "d1", true, Pub(0, false), "sites/lyon/devices/d2/telemetry/temp", "DENY by default"),
    ("placeholders", "main", "d1", true, Pub(0, false), "sites/paris/devices/d1/telemetry/temp", "DENY by default"),
    ("placeholders", "main", "d2", true, Pub(0, false), "sites/paris/devices/d2/telemetry/temp", "ALLOW by TopicPolicy/sensors rules[0]"),
    ("placeholders", "main", "nosite", true, Pub(0, false), "sites/lyon/devices/nosite/telemetry/t", "DENY by default"),
    ("placeholders", "main", "nosite", true, Pub(0, false), "inbox/nosite/a", "ALLOW by TopicPolicy/everyone rules[2]"),
    ("placeholders", "main", "auditor", false, Pub(0, false), "audit/auditor", "DENY by default"),
    // --- PUBLISH: the topic must match an allowed pattern; wildcards in patterns match.
    ("publish", "main", "d1", true, Pub(0, false), "sites/lyon/devices/d1/telemetry", "ALLOW by TopicPolicy/sensors rules[0]"),
    ("publish", "main", "d1", true, Pub(0, false), "sites/lyon/devices/d1/telemetry/", "ALLOW by TopicPolicy/sensors rules[0]"),
    ("publish", "main", "d1", true, Pub(1, false), "sites/lyon/devices/d1/telemetry/a/b/c", "ALLOW by TopicPolicy/sensors rules[0]"),
    ("publish", "main", "gw", true, Pub(0, false), "sites/lyon/devices/d9/commands/reboot", "ALLOW by TopicPolicy/gateways rules[1]"),
    ("publish", "main", "gw", true, Pub(0, false), "sites/lyon/devices/commands/reboot", "DENY by default"),
    ("publish", "main", "backend", false, Pub(2, true), "anything/else", "ALLOW by TopicPolicy/backend rules[0]"),
    ("publish", "main", "d1", true, Pub(0, false), "devices/d1/other", "DENY by default"),
    // --- Deny beats allow: same pattern, broader deny, narrower deny; no specificity ordering.
    ("deny", "main", "d2", true, Pub(0, false), "eq/topic", "DENY by TopicPolicy/d2-order rules[1]"),
    ("deny", "main", "d2", true, Pub(0, false), "broad/x/y", "DENY by TopicPolicy/d2-order rules[3]"),
    ("deny", "main", "d1", true, Pub(0, false), "sites/lyon/devices/d1/telemetry/secret", "DENY by TopicPolicy/sensors rules[3]"),
    ("deny", "main", "d1", true, Pub(0, false), "sites/lyon/devices/d1/telemetry/secret/x", "ALLOW by TopicPolicy/sensors rules[0]"),
    ("deny", "main", "backend", false, Pub(0, false), "sites/lyon/devices/d1/telemetry/t", "DENY by TopicPolicy/backend rules[1]"),
    ("deny", "main", "backend", false, Sub(0), "sites/lyon/devices/d1/telemetry/t", "ALLOW by TopicPolicy/backend rules[0]"),
    ("deny", "main", "d1", true, Pub(0, false), "public/admin/x", "DENY by TopicPolicy/everyone rules[1]"),
    // --- No match -> defaultAction.
    ("default", "main", "d1", true, Pub(0, false), "unrelated", "DENY by default"),
    ("default", "open", "o1", true, Pub(0, false), "unrelated", "ALLOW by default"),
    ("default", "open", "stranger", false, Sub(2), "#", "ALLOW by default"),
    // --- acl.policySelector: only selected policies apply.
    ("selector", "open", "o1", true, Pub(0, false), "forbidden/z", "DENY by TopicPolicy/open-prod rules[0]"),
    ("selector", "open", "o1", true, Pub(0, false), "x/y", "ALLOW by default"),
    // --- SUBSCRIBE: the filter must be covered by an allowed pattern.
    ("cover", "main", "d1", true, Sub(0), "sites/lyon/devices/d1/commands/#", "ALLOW by TopicPolicy/sensors rules[1]"),
    ("cover", "main", "d1", true, Sub(0), "sites/lyon/devices/d1/commands/+/reboot", "ALLOW by TopicPolicy/sensors rules[1]"),
    ("cover", "main", "d1", true, Sub(2), "sites/lyon/devices/d1/commands", "ALLOW by TopicPolicy/sensors rules[1]"),
    ("cover", "main", "d1", true, Sub(0), "sites/lyon/devices/+/commands/#", "DENY by default"),
    ("cover", "main", "d1", true, Sub(0), "sites/lyon/devices/#", "DENY by default"),
    ("cover", "main", "d1", true, Sub(0), "sites/lyon/devices/d1/#", "DENY by default"),
    ("cover", "main", "gw", true, Sub(0), "sites/lyon/devices/d1/telemetry/temp", "ALLOW by TopicPolicy/gateways rules[0]"),
    ("cover", "main", "gw", true, Sub(0), "sites/lyon/devices/+/telemetry/temp", "ALLOW by TopicPolicy/gateways rules[0]"),
    ("cover", "main", "gw", true, Sub(1), "sites/lyon/devices/+/commands/#", "ALLOW by TopicPolicy/gateways rules[1]"),
    ("cover", "main", "gw", true, Sub(0), "sites/paris/devices/+/telemetry/temp", "DENY by default"),
    ("cover", "main", "gw", true, Sub(0), "sites/+/devices/d1/telemetry/temp", "DENY by default"),
    ("cover", "main", "ops", false, Sub(0), "ops/+/x/#", "ALLOW by TopicPolicy/users rules[1]"),
    ("cover", "main", "ops", false, Sub(0), "y/x", "ALLOW by TopicPolicy/users rules[1]"),
    ("cover", "main", "ops", false, Sub(0), "+/x", "ALLOW by TopicPolicy/users rules[1]"),
    ("cover", "main", "ops", false, Sub(0), "#/x", "DENY: invalid request"),
    ("cover", "main", "ops", false, Sub(0), "y/#", "DENY by default"),
    // --- SUBSCRIBE deny: a deny pattern that intersects the filter denies it.
    ("intersect", "main", "gw", true, Sub(0), "sites/lyon/devices/+/telemetry/#", "DENY by TopicPolicy/gateways rules[2]"),
    ("intersect", "main", "gw", true, Sub(0), "sites/lyon/devices/+/telemetry/+", "DENY by TopicPolicy/gateways rules[2]"),
    ("intersect", "main", "gw", true, Sub(0), "sites/lyon/devices/d1/telemetry/private", "DENY by TopicPolicy/gateways rules[2]"),
    ("intersect", "main", "d1", true, Sub(0), "broadcast/+/news", "DENY by TopicPolicy/d1-extra rules[1]"),
    ("intersect", "main", "d1", true, Sub(0), "broadcast/public/news", "ALLOW by TopicPolicy/d1-extra rules[0]"),
    ("intersect", "main", "d1", true, Sub(0), "broadcast/#", "DENY by TopicPolicy/d1-extra rules[1]"),
    ("intersect", "main", "d1", true, Sub(0), "#", "DENY by TopicPolicy/d1-extra rules[1]"),
    ("intersect", "main", "stranger", false, Sub(0), "public/#", "DENY by TopicPolicy/everyone rules[1]"),
    ("intersect", "main", "stranger", false, Sub(0), "public/+", "DENY by TopicPolicy/everyone rules[1]"),
    ("intersect", "main", "stranger", false, Sub(0), "public/news/+", "ALLOW by TopicPolicy/everyone rules[0]"),
    ("intersect", "main", "stranger", false, Sub(0), "public/admin", "DENY by TopicPolicy/everyone rules[1]"),
    ("intersect", "main", "backend", false, Sub(0), "#", "DENY by TopicPolicy/everyone rules[1]"),
    ("intersect", "main", "backend", false, Sub(0), "+/broker", "ALLOW by TopicPolicy/backend rules[0]"),
    // --- $share/<group>/<filter> is judged on <filter>.
    ("share", "main", "gw", true, Sub(0), "$share/g1/sites/lyon/devices/+/telemetry/temp", "ALLOW by TopicPolicy/gateways rules[0]"),
    ("share", "main", "gw", true, Sub(0), "$share/g1/sites/lyon/devices/+/telemetry/#", "DENY by TopicPolicy/gateways rules[2]"),
    ("share", "main", "d1", true, Sub(0), "$share/g1/#", "DENY by TopicPolicy/d1-extra rules[1]"),
    ("share", "main", "stranger", false, Sub(0), "$share/g1/#", "DENY by TopicPolicy/everyone rules[1]"),
    ("share", "main", "gw", true, Sub(0), "$share/g1/sites/paris/devices/+/telemetry/temp", "DENY by default"),
    ("share", "main", "backend", false, Sub(0), "$share/g/$SYS/x", "ALLOW by TopicPolicy/backend rules[2]"),
    // --- $SYS only when a rule names $SYS: wildcards in a first level never match it.
    ("sys", "main", "backend", false, Sub(0), "$SYS/broker/uptime", "ALLOW by TopicPolicy/backend rules[2]"),
    ("sys", "main", "backend", false, Sub(0), "$SYS/#", "ALLOW by TopicPolicy/backend rules[2]"),
    ("sys", "main", "backend", false, Pub(0, false), "$SYS/x", "DENY by default"),
    ("sys", "main", "ops", false, Sub(0), "$SYS/x", "DENY by default"),
    ("sys", "main", "d1", true, Sub(0), "$SYS/#", "DENY by default"),
    ("sys", "main", "sysreader", false, Sub(0), "$SYS/broker/load", "ALLOW by TopicPolicy/sysreader rules[0]"),
    ("sys", "main", "sysreader", false, Sub(0), "public/news", "DENY by TopicPolicy/sysreader rules[1]"),
    ("sys", "main", "sysreader", false, Sub(0), "#", "DENY by TopicPolicy/sysreader rules[1]"),
    ("sys", "main", "sysreader", false, Pub(0, false), "$SYS/broker/load", "DENY by default"),
    // --- qos constraints.
    ("qos", "main", "d1", true, Pub(1, false), "sites/lyon/devices/d1/telemetry/temp", "ALLOW by TopicPolicy/sensors rules[0]"),
    ("qos", "main", "d1", true, Pub(2, false), "sites/lyon/devices/d1/telemetry/temp", "DENY by default"),
    ("qos", "main", "d1", true, Sub(1), "broadcast/public/news", "DENY by default"),
    ("qos", "main", "d1", true, Sub(2), "sites/lyon/devices/d1/commands/x", "ALLOW by TopicPolicy/sensors rules[1]"),
    // --- retain constraints (publish only).
    ("retain", "main", "d1", true, Pub(0, true), "devices/d1/state", "ALLOW by TopicPolicy/sensors rules[2]"),
    ("retain", "main", "d1", true, Pub(0, false), "devices/d1/state", "DENY by default"),
    ("retain", "main", "d1", true, Pub(0, true), "sites/lyon/devices/d1/telemetry/t", "ALLOW by TopicPolicy/sensors rules[0]"),
    // --- Will messages are authorized like publishes.
    ("will", "main", "d1", true, Will(1, false), "will/d1", "ALLOW by TopicPolicy/everyone rules[3]"),
    ("will", "main", "d1", true, Will(0, false), "will/d1", "DENY by default"),
    ("will", "main", "d1", true, Will(1, true), "will/d2", "DENY by default"),
    ("will", "main", "d1", true, Will(1, false), "public/admin/gone", "DENY by TopicPolicy/everyone rules[1]"),
    // --- Users and all: true.
    ("users", "main", "auditor", false, Sub(0), "audit/#", "ALLOW by TopicPolicy/users rules[1]"),
    ("users", "main", "auditor", false, Sub(0), "public/news", "ALLOW by TopicPolicy/everyone rules[0]"),
    ("users", "main", "stranger", false, Sub(0), "public/news", "ALLOW by TopicPolicy/everyone rules[0]"),
    ("users", "main", "stranger", false, Pub(0, false), "inbox/stranger/a", "DENY by default"),
    ("users", "main", "d1", true, Sub(0), "public/news", "ALLOW by TopicPolicy/everyone rules[0]"),
    ("users", "main", "d1", true, Pub(0, false), "inbox/d1/x", "ALLOW by TopicPolicy/everyone rules[2]"),
    ("users", "main", "d1", true, Pub(0, false), "inbox/d2/x", "DENY by default"),
    // --- Suspended and Revoked devices are denied everything, even under defaultAction allow.
    ("blocked", "main", "sus", true, Pub(0, false), "sites/lyon/devices/sus/telemetry/t", "DENY by device state (suspended)"),
    ("blocked", "main", "sus", true, Sub(0), "public/news", "DENY by device state (suspended)"),
    ("blocked", "main", "rev", true, Pub(0, false), "inbox/rev/x", "DENY by device state (revoked)"),
    ("blocked", "open", "o2", true, Pub(0, false), "anything", "DENY by device state (suspended)"),
    // --- Invalid requests are denied.
    ("invalid", "main", "d1", true, Pub(0, false), "a/+", "DENY: invalid request"),
    ("invalid", "main", "d1", true, Sub(0), "a/#/b", "DENY: invalid request"),
    ("invalid", "main", "d1", true, Pub(3, false), "sites/lyon/devices/d1/telemetry/temp", "DENY: invalid request"),
    ("invalid", "main", "backend", false, Sub(0), "$share/g1", "DENY: invalid request"),
];

fn compiled() -> Vec<(String, Compiled)> {
    let docs = parse_file(&SourceFile {
        path: "fixture.yaml".into(),
        text: FIXTURE.into(),
    })
    .unwrap();
    // The fixture deliberately holds rules `check` flags: they must be exactly these.
    let report = operator::check::check(&docs);
    let flagged: Vec<(&str, &str)> = report
        .findings
        .iter()
        .map(|f| (f.object.as_str(), f.field.as_str()))
        .collect();
    assert_eq!(
        flagged,
        [
            ("TopicPolicy/users", "spec.rules[0].topics[0]"),
            ("TopicPolicy/d2-order", "spec.rules[0]"),
            ("TopicPolicy/d2-order", "spec.rules[2]"),
            ("TopicPolicy/open-dev", "metadata.labels"),
        ],
        "{:#?}",
        report.findings
    );
    clusters(&docs)
        .map(|(ns, c)| {
            (
                c.metadata.name.clone().unwrap(),
                compile_documents(&docs, ns, c).unwrap(),
            )
        })
        .collect()
}

#[test]
fn semantics_table() {
    assert!(CASES.len() >= 60, "{} cases", CASES.len());
    let sets = compiled();
    let mut failures = Vec::new();
    for (i, (section, cluster, user, device, op, topic, want)) in CASES.iter().enumerate() {
        let compiled = &sets.iter().find(|(n, _)| n == cluster).unwrap().1;
        let (action, qos, retain) = match *op {
            Pub(q, r) | Will(q, r) => (Action::Publish, q, r),
            Sub(q) => (Action::Subscribe, q, false),
        };
        let who = if *device {
            Who::Device(user)
        } else {
            Who::User(user)
        };
        let e = explain_compiled(
            compiled,
            cluster,
            &Question {
                who,
                action,
                topic,
                qos,
                retain,
            },
        );
        let got = e.to_string();
        let first = got.lines().next().unwrap_or("");
        if first != *want {
            failures.push(format!(
                "#{i} [{section}] {user} {topic}: want '{want}', got:\n{got}"
            ));
        }
        let req = match *op {
            Pub(q, r) => Request::publish(user, topic, q, r),
            Will(q, r) => Request::will(user, topic, q, r),
            Sub(q) => Request::subscribe(user, topic, q),
        };
        let slow = naive::decide(&compiled.rules, &req);
        if slow.effect != e.decision.effect {
            failures.push(format!(
                "#{i} [{section}]: naive reference disagrees: {slow:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
