//! `mqtt-operator acl explain` and `acl compile` as a user runs them, on the quickstart example.

use std::path::PathBuf;
use std::process::Command;

fn quickstart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/quickstart")
}

/// Runs the binary; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-operator"))
        .args(args)
        .output()
        .expect("runs mqtt-operator");
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn explain(who: &str, name: &str, action: &str, topic: &str, extra: &[&str]) -> (i32, String) {
    let dir = quickstart();
    let mut args = vec![
        "acl",
        "explain",
        "-f",
        dir.to_str().unwrap(),
        who,
        name,
        action,
        topic,
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args);
    assert!(err.is_empty(), "{err}");
    (code, out)
}

/// (--device/--user, name, --publish/--subscribe, topic, extra flags, exit code, first line)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    i32,
    &'static str,
);

#[test]
fn quickstart_decisions() {
    let cases: &[Case] = &[
        (
            "--device",
            "sensor-01",
            "--publish",
            "sites/lyon/devices/sensor-01/telemetry/temp",
            &[],
            0,
            "ALLOW by TopicPolicy/sensors rules[0]",
        ),
        (
            "--device",
            "sensor-01",
            "--publish",
            "sites/lyon/devices/sensor-01/telemetry/temp",
            &["--qos", "1", "--retain"],
            0,
            "ALLOW by TopicPolicy/sensors rules[0]",
        ),
        (
            "--device",
            "sensor-01",
            "--publish",
            "sites/lyon/devices/sensor-01/telemetry/temp",
            &["--qos", "2"],
            1,
            "DENY by default",
        ),
        (
            "--device",
            "sensor-01",
            "--publish",
            "sites/lyon/devices/sensor-02/telemetry/temp",
            &[],
            1,
            "DENY by default",
        ),
        (
            "--device",
            "sensor-01",
            "--subscribe",
            "sites/lyon/devices/sensor-01/commands/#",
            &[],
            0,
            "ALLOW by TopicPolicy/sensors rules[1]",
        ),
        (
            "--device",
            "gateway-lyon",
            "--subscribe",
            "sites/lyon/devices/+/telemetry/#",
            &[],
            0,
            "ALLOW by TopicPolicy/gateways rules[0]",
        ),
        (
            "--device",
            "gateway-lyon",
            "--subscribe",
            "$share/ingest/sites/lyon/devices/+/telemetry/#",
            &[],
            0,
            "ALLOW by TopicPolicy/gateways rules[0]",
        ),
        (
            "--device",
            "gateway-lyon",
            "--subscribe",
            "#",
            &[],
            1,
            "DENY by default",
        ),
        (
            "--device",
            "gateway-lyon",
            "--subscribe",
            "sites/+/devices/+/telemetry/#",
            &[],
            1,
            "DENY by default",
        ),
        (
            "--user",
            "backend",
            "--subscribe",
            "sites/lyon/devices/+/telemetry/#",
            &[],
            1,
            "DENY by default",
        ),
        (
            "--device",
            "sensor-01",
            "--publish",
            "sites/lyon/+",
            &[],
            1,
            "DENY: invalid request",
        ),
    ];
    for (who, name, action, topic, extra, code, first) in cases {
        let (got_code, out) = explain(who, name, action, topic, extra);
        assert_eq!(
            out.lines().next(),
            Some(*first),
            "{name} {action} {topic}:\n{out}"
        );
        assert_eq!(got_code, *code, "{name} {action} {topic}:\n{out}");
    }
}

#[test]
fn explain_shows_the_expanded_pattern_and_revision() {
    let (_, out) = explain(
        "--device",
        "sensor-02",
        "--publish",
        "sites/lyon/devices/sensor-02/telemetry/hum",
        &[],
    );
    assert!(
        out.contains("pattern 'sites/lyon/devices/sensor-02/telemetry/#'"),
        "{out}"
    );
    let (code, compiled, _) = run(&["acl", "compile", "-f", quickstart().to_str().unwrap()]);
    assert_eq!(code, 0);
    let revision = compiled
        .lines()
        .find_map(|l| l.strip_prefix("revision "))
        .and_then(|l| l.split(':').next())
        .expect("revision line");
    assert_eq!(revision.len(), 32);
    assert!(out.contains(&format!("revision {revision}")), "{out}");
}

#[test]
fn compile_writes_a_rule_set_the_matcher_loads() {
    let out = std::env::temp_dir().join(format!("acl-{}.bin", std::process::id()));
    let (code, stdout, err) = run(&[
        "acl",
        "compile",
        "-f",
        quickstart().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    assert!(
        stdout.contains(&format!("{} bytes", bytes.len())),
        "{stdout}"
    );
    let set = contract::acl::codec::decode(&bytes).unwrap();
    let m = contract::acl::Matcher::new(&set);
    let r = contract::acl::Request::publish(
        "sensor-01",
        "sites/lyon/devices/sensor-01/telemetry/temp",
        0,
        false,
    );
    assert!(m.decide(&r).is_allowed());
}

#[test]
fn input_errors_exit_2() {
    let (code, _, err) = run(&[
        "acl",
        "explain",
        "-f",
        "/nonexistent",
        "--device",
        "x",
        "--publish",
        "a",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent"), "{err}");
    let (code, _, _) = run(&[
        "acl",
        "explain",
        "-f",
        quickstart().to_str().unwrap(),
        "--device",
        "x",
        "--user",
        "y",
        "--publish",
        "a",
    ]);
    assert_eq!(code, 2, "--device and --user are exclusive");
}
