//! Every validation rule: a small spec from YAML, validated, asserting the field path named.

use crds::pattern::Pattern;
use crds::validate::{
    policy_warnings, validate_bridge, validate_cluster, validate_device, validate_policy,
    FieldError, MAX_CSR_BYTES,
};
use crds::{BridgeSpec, DeviceIdentitySpec, MqttClusterSpec, TopicPolicySpec};
use proptest::prelude::*;

fn cluster(yaml: &str) -> Vec<FieldError> {
    validate_cluster(&serde_yaml::from_str::<MqttClusterSpec>(yaml).unwrap())
}
fn device(yaml: &str) -> Vec<FieldError> {
    validate_device(&serde_yaml::from_str::<DeviceIdentitySpec>(yaml).unwrap())
}
fn policy(yaml: &str) -> Vec<FieldError> {
    validate_policy(&serde_yaml::from_str::<TopicPolicySpec>(yaml).unwrap())
}
fn bridge(yaml: &str) -> Vec<FieldError> {
    validate_bridge(&serde_yaml::from_str::<BridgeSpec>(yaml).unwrap())
}

/// Asserts the errors name exactly these paths (in order) and nothing else.
fn paths(errors: Vec<FieldError>) -> Vec<String> {
    errors.into_iter().map(|e| e.path).collect()
}

#[test]
fn cluster_rules() {
    assert_eq!(paths(cluster("{}")), Vec::<String>::new());
    for replicas in [0, 2, 4, 6, 8, 9, -1] {
        assert_eq!(
            paths(cluster(&format!("core: {{replicas: {replicas}}}"))),
            ["spec.core.replicas"],
            "{replicas}"
        );
    }
    for replicas in [1, 3, 5, 7] {
        assert_eq!(
            paths(cluster(&format!("core: {{replicas: {replicas}}}"))),
            Vec::<String>::new()
        );
    }
    assert_eq!(
        paths(cluster("core: {storage: {size: 1GB}}")),
        ["spec.core.storage.size"]
    );
    assert_eq!(
        paths(cluster("listeners: {mqtts: {enabled: false}}")),
        ["spec.listeners"]
    );
    assert_eq!(
        paths(cluster(
            "listeners: {mqtts: {port: 1883}, mqtt: {enabled: true, port: 1883}}"
        )),
        ["spec.listeners.mqtt.port"]
    );
    assert_eq!(
        paths(cluster("listeners: {mqtts: {port: 70000}}")),
        ["spec.listeners.mqtts.port"]
    );
    assert_eq!(
        paths(cluster("listeners: {mqtts: {port: 9090}}")),
        ["spec.listeners.mqtts.port"]
    );
    assert_eq!(
        paths(cluster("listeners: {wss: {enabled: true, path: mqtt}}")),
        ["spec.listeners.wss.path"]
    );
    // A disabled listener's port may clash: it is not bound.
    assert_eq!(
        paths(cluster("listeners: {wss: {enabled: false, port: 8883}}")),
        Vec::<String>::new()
    );
    // Nobody could authenticate.
    assert_eq!(
        paths(cluster("listeners: {mqtts: {clientAuth: none}}")),
        ["spec.auth.allowAnonymous"]
    );
    assert_eq!(
        paths(cluster(
            "listeners: {mqtts: {clientAuth: none}}\nauth: {allowAnonymous: true}"
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        paths(cluster(
            "listeners: {service: {loadBalancerSourceRanges: ['10.0.0.0/8', 'nope']}}"
        )),
        ["spec.listeners.service.loadBalancerSourceRanges"]
    );
    assert_eq!(
        paths(cluster("pki: {clusterCa: {generate: false}}")),
        ["spec.pki.clusterCa.secretRef"]
    );
    assert_eq!(
        paths(cluster(
            "pki: {clientsCa: {generate: false, secretRef: {name: my-ca}}}"
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        paths(cluster(
            "pki: {clientsCa: {validity: 30d, renewBefore: 30d}}"
        )),
        ["spec.pki.clientsCa.renewBefore"]
    );
    assert_eq!(
        paths(cluster("pki: {serverCert: {validity: 90days}}")),
        ["spec.pki.serverCert.validity"]
    );
    assert_eq!(
        paths(cluster(
            "pki: {serverCert: {validity: 30m, renewBefore: 10m}}"
        )),
        ["spec.pki.serverCert.validity"]
    );
    assert_eq!(
        paths(cluster(
            "acl: {policySelector: {matchExpressions: [{key: site, operator: In}]}}"
        )),
        ["spec.acl.policySelector.matchExpressions[0].values"]
    );
    assert_eq!(
        paths(cluster("limits: {maxConnections: 0}")),
        ["spec.limits.maxConnections"]
    );
    assert_eq!(
        paths(cluster("limits: {maxInflight: 0}")),
        ["spec.limits.maxInflight"]
    );
    assert_eq!(
        paths(cluster("limits: {maxPacketSize: 100}")),
        ["spec.limits.maxPacketSize"]
    );
    assert_eq!(
        paths(cluster("limits: {maxPacketSize: 268435456}")),
        ["spec.limits.maxPacketSize"]
    );
    assert_eq!(
        paths(cluster("limits: {sessionExpiry: forever}")),
        ["spec.limits.sessionExpiry"]
    );
    assert_eq!(
        paths(cluster("limits: {rate: {connectionsPerSecond: 0}}")),
        ["spec.limits.rate.connectionsPerSecond"]
    );
    assert_eq!(
        paths(cluster(
            "monitoring: {prometheusRule: {overrides: {connectionsWarningPercent: 96}}}"
        )),
        ["spec.monitoring.prometheusRule.overrides.connectionsWarningPercent"]
    );
    assert_eq!(
        paths(cluster(
            "monitoring: {prometheusRule: {overrides: {authFailuresPerSecond: -1}}}"
        )),
        ["spec.monitoring.prometheusRule.overrides.authFailuresPerSecond"]
    );
    assert_eq!(
        paths(cluster("monitoring: {serviceMonitor: {interval: 0s}}")),
        ["spec.monitoring.serviceMonitor.interval"]
    );
    assert_eq!(
        paths(cluster(
            "core: {replicas: 3}\npodDisruptionBudget: {maxUnavailable: 2}"
        )),
        ["spec.podDisruptionBudget.maxUnavailable"]
    );
    assert_eq!(
        paths(cluster(
            "core: {replicas: 5}\npodDisruptionBudget: {maxUnavailable: 2}"
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        paths(cluster(
            "core: {replicas: 1}\npodDisruptionBudget: {maxUnavailable: 1}"
        )),
        Vec::<String>::new()
    );
}

const DEV: &str = "clusterRef: {name: c}\ndeviceId: d1\n";

#[test]
fn device_rules() {
    assert_eq!(paths(device(DEV)), Vec::<String>::new());
    assert_eq!(
        paths(device("clusterRef: {name: C}\ndeviceId: d1")),
        ["spec.clusterRef.name"]
    );
    for bad in ["''", "a/b", "a+b", "'a#'", "'a b'"] {
        assert_eq!(
            paths(device(&format!("clusterRef: {{name: c}}\ndeviceId: {bad}"))),
            ["spec.deviceId"],
            "{bad}"
        );
    }
    let long = "x".repeat(65);
    assert_eq!(
        paths(device(&format!(
            "clusterRef: {{name: c}}\ndeviceId: {long}"
        ))),
        ["spec.deviceId"]
    );
    assert_eq!(
        paths(device(&format!("{DEV}certificate: {{validity: 90 days}}"))),
        ["spec.certificate.validity"]
    );
    assert_eq!(
        paths(device(&format!("{DEV}certificate: {{validity: 10m}}"))),
        ["spec.certificate.validity"]
    );
    assert_eq!(
        paths(device(&format!(
            "{DEV}certificate: {{validity: 30d, renewBefore: 31d}}"
        ))),
        ["spec.certificate.renewBefore"]
    );
    assert_eq!(
        paths(device(&format!(
            "{DEV}certificate: {{secretName: Bad_Name}}"
        ))),
        ["spec.certificate.secretName"]
    );
    let csr = "-----BEGIN CERTIFICATE REQUEST-----\\nAAAA\\n-----END CERTIFICATE REQUEST-----";
    assert_eq!(
        paths(device(&format!("{DEV}csr: \"{csr}\""))),
        Vec::<String>::new()
    );
    assert_eq!(
        paths(device(&format!(
            "{DEV}csr: \"{csr}\"\ncertificate: {{keyAlgorithm: ed25519}}"
        ))),
        ["spec.certificate.keyAlgorithm"]
    );
    assert_eq!(paths(device(&format!("{DEV}csr: not a pem"))), ["spec.csr"]);
}

#[test]
fn oversized_csr_is_rejected_before_parsing() {
    let body = "A".repeat(MAX_CSR_BYTES);
    let csr =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----");
    let mut spec: DeviceIdentitySpec = serde_yaml::from_str(DEV).unwrap();
    spec.csr = Some(csr);
    let errors = validate_device(&spec);
    assert_eq!(paths(errors.clone()), ["spec.csr"]);
    assert!(errors[0].message.contains("limit"), "{}", errors[0].message);
}

const POL: &str = "clusterRef: {name: c}\nsubjects: [{device: d1}]\n";

#[test]
fn policy_rules() {
    let ok = format!(
        "{POL}rules: [{{effect: allow, actions: [publish], topics: ['a/${{deviceId}}/#']}}]"
    );
    assert_eq!(paths(policy(&ok)), Vec::<String>::new());
    assert_eq!(paths(policy("clusterRef: {name: c}\nsubjects: []\nrules: [{effect: allow, actions: [publish], topics: [a]}]")), ["spec.subjects"]);
    assert_eq!(paths(policy(&format!("{POL}rules: []"))), ["spec.rules"]);
    assert_eq!(
        paths(policy("clusterRef: {name: c}\nsubjects: [{all: false}]\nrules: [{effect: allow, actions: [publish], topics: [a]}]")),
        ["spec.subjects[0]"]
    );
    assert_eq!(
        paths(policy("clusterRef: {name: c}\nsubjects: [{}]\nrules: [{effect: allow, actions: [publish], topics: [a]}]")),
        ["spec.subjects[0]"]
    );
    assert_eq!(
        paths(policy("clusterRef: {name: c}\nsubjects: [{device: 'a/b'}]\nrules: [{effect: allow, actions: [publish], topics: [a]}]")),
        ["spec.subjects[0].device"]
    );
    assert_eq!(
        paths(policy("clusterRef: {name: c}\nsubjects: [{user: ''}]\nrules: [{effect: allow, actions: [publish], topics: [a]}]")),
        ["spec.subjects[0].user"]
    );
    assert_eq!(
        paths(policy("clusterRef: {name: c}\nsubjects: [{deviceSelector: {matchLabels: {'bad key': x}}}]\nrules: [{effect: allow, actions: [publish], topics: [a]}]")),
        ["spec.subjects[0].deviceSelector.matchLabels"]
    );
    assert_eq!(
        paths(policy(&format!(
            "{POL}rules: [{{effect: allow, actions: [], topics: [a]}}]"
        ))),
        ["spec.rules[0].actions"]
    );
    assert_eq!(
        paths(policy(&format!(
            "{POL}rules: [{{effect: allow, actions: [publish, publish], topics: [a]}}]"
        ))),
        ["spec.rules[0].actions"]
    );
    assert_eq!(
        paths(policy(&format!(
            "{POL}rules: [{{effect: allow, actions: [publish], topics: []}}]"
        ))),
        ["spec.rules[0].topics"]
    );
    for (bad, _why) in [
        ("'a/#/b'", "hash not last"),
        ("'a/b#'", "hash glued"),
        ("'a+/b'", "plus glued"),
        ("''", "empty"),
        ("'a/${deviceId'", "unterminated"),
        ("'a/${tenant}'", "unknown placeholder"),
        ("'$share/g/a'", "shared prefix"),
        ("\"a\\0b\"", "NUL"),
    ] {
        assert_eq!(
            paths(policy(&format!(
                "{POL}rules: [{{effect: deny, actions: [subscribe], topics: [ok/x, {bad}]}}]"
            ))),
            ["spec.rules[0].topics[1]"],
            "{bad}"
        );
    }
    assert_eq!(
        paths(policy(&format!(
            "{POL}rules: [{{effect: allow, actions: [publish], topics: [a], qos: [0, 3]}}]"
        ))),
        ["spec.rules[0].qos[1]"]
    );
    assert_eq!(
        paths(policy(&format!(
            "{POL}rules: [{{effect: allow, actions: [subscribe], topics: [a], retain: true}}]"
        ))),
        ["spec.rules[0].retain"]
    );
}

#[test]
fn oversized_topic_and_policy_are_rejected() {
    let long = "a".repeat(65_536);
    let errors = policy(&format!(
        "{POL}rules: [{{effect: allow, actions: [publish], topics: ['{long}']}}]"
    ));
    assert_eq!(paths(errors.clone()), ["spec.rules[0].topics[0]"]);
    assert!(
        errors[0].message.contains("65536 bytes"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[0].message.len() < 300,
        "the message abbreviates the topic"
    );
    let topics: Vec<String> = (0..300).map(|i| format!("t/{i}")).collect();
    let yaml = format!("{POL}rules: [{{effect: allow, actions: [publish], topics: {topics:?}}}]");
    assert_eq!(paths(policy(&yaml)), ["spec.rules[0].topics"]);
}

#[test]
fn policy_warnings_flag_broad_subscriptions() {
    let spec: TopicPolicySpec = serde_yaml::from_str(
        "clusterRef: {name: c}\nsubjects: [{deviceSelector: {}}]\nrules: [{effect: allow, actions: [subscribe], topics: ['#', '$SYS/#', a/b]}]",
    )
    .unwrap();
    assert_eq!(
        paths(policy_warnings(&spec)),
        ["spec.rules[0].topics[0]", "spec.rules[0].topics[1]"]
    );
    let single: TopicPolicySpec = serde_yaml::from_str(
        "clusterRef: {name: c}\nsubjects: [{device: d}]\nrules: [{effect: allow, actions: [subscribe], topics: ['#']}]",
    )
    .unwrap();
    assert!(
        policy_warnings(&single).is_empty(),
        "a single named device is a deliberate choice"
    );
}

const BR: &str = "clusterRef: {name: edge}\n";

#[test]
fn bridge_rules() {
    let routes = "routes: [{direction: out, local: 'site/+/t/#', remote: 'prod/acme/+/t/#'}]";
    assert_eq!(
        paths(bridge(&format!("{BR}remote: {{host: central}}\n{routes}"))),
        Vec::<String>::new()
    );
    assert_eq!(
        paths(bridge(&format!("{BR}remote: {{}}\n{routes}"))),
        ["spec.remote"]
    );
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{host: a, clusterRef: {{name: b}}}}\n{routes}"
        ))),
        ["spec.remote"]
    );
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{clusterRef: {{name: edge}}}}\n{routes}"
        ))),
        ["spec.remote.clusterRef.name"]
    );
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{clusterRef: {{name: central}}, port: 1}}\n{routes}"
        ))),
        ["spec.remote"]
    );
    // With clusterRef the client identity is the user's choice; the CA is the remote's.
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{clusterRef: {{name: central}}, tls: {{clientIdentityRef: {{name: gw}}}}}}\n{routes}"
        ))),
        Vec::<String>::new()
    );
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{clusterRef: {{name: central}}, tls: {{caSecretRef: {{name: ca}}}}}}\n{routes}"
        ))),
        ["spec.remote"]
    );
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{host: a, port: 0}}\n{routes}"
        ))),
        ["spec.remote.port"]
    );
    assert_eq!(
        paths(bridge(&format!("{BR}remote: {{host: 'a b'}}\n{routes}"))),
        ["spec.remote.host"]
    );
    assert_eq!(
        paths(bridge(&format!("{BR}remote: {{host: a}}\nroutes: []"))),
        ["spec.routes"]
    );
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{host: a}}\nroutes: [{{direction: in, local: 'a/#/b', remote: 'c/#'}}]"
        ))),
        ["spec.routes[0].local"]
    );
    assert_eq!(
        paths(bridge(&format!("{BR}remote: {{host: a}}\nroutes: [{{direction: in, local: '$share/g/a', remote: 'c'}}]"))),
        ["spec.routes[0].local"]
    );
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{host: a}}\nroutes: [{{direction: out, local: 'a/+', remote: 'b/#'}}]"
        ))),
        ["spec.routes[0].remote"]
    );
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{host: a}}\nroutes: [{{direction: out, local: a, remote: b, qos: 2}}]"
        ))),
        ["spec.routes[0].qos"]
    );
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{host: a}}\n{routes}\nbuffer: {{maxMessages: 0}}"
        ))),
        ["spec.buffer.maxMessages"]
    );
    assert_eq!(
        paths(bridge(&format!(
            "{BR}remote: {{host: a}}\n{routes}\nbuffer: {{maxAge: soon}}"
        ))),
        ["spec.buffer.maxAge"]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Pattern parsing never panics, and an accepted pattern expands to a valid filter.
    #[test]
    fn patterns_never_panic(s in "(\\$\\{|\\}|deviceId|label:|[a-z]|/|\\+|#|\\$){0,40}", id in "[a-z0-9]{1,8}") {
        if let Ok(p) = Pattern::parse(&s) {
            let labels = p.label_keys().map(|k| (k.to_string(), "v".to_string())).collect();
            let expanded = p.expand(Some(&id), &labels).expect("every placeholder has a value");
            prop_assert!(contract::topic::validate_topic_filter(&expanded).is_ok(), "{s} -> {expanded}");
        }
    }
}
