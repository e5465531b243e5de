//! `mqtt-operator check` on the shipped examples, run as the real binary the way CI runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mqtt-operator"))
        .current_dir(repo())
        .arg("check")
        .args(args)
        .output()
        .expect("run mqtt-operator")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn quickstart_is_clean() {
    let o = check(&["-f", "manifests/examples/quickstart"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(stdout(&o), "");
    assert!(String::from_utf8_lossy(&o.stderr).contains("checked 7 object(s): 0 problem(s)"));
}

/// Each invalid example, checked with the quickstart it references, fails with exactly one
/// problem: the one its `# expect: Kind/name field.path` header names.
#[test]
fn every_invalid_example_fails_naming_its_field() {
    let dir = repo().join("manifests/examples/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 12,
        "at least 12 distinct mistakes, found {}",
        files.len()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no '# expect:' header", file.display()));
        let (object, field) = expect.split_once(' ').unwrap();
        let rel = format!(
            "manifests/examples/invalid/{}",
            file.file_name().unwrap().to_str().unwrap()
        );
        let o = check(&["-f", "manifests/examples/quickstart", "-f", &rel]);
        let out = stdout(&o);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{rel}: expected exit 1, output:\n{out}"
        );
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{rel}: expected exactly one problem, got:\n{out}"
        );
        let want = format!("{rel}:0: {object}: {field}: ");
        assert!(
            lines[0].starts_with(&want),
            "{rel}: expected a line starting {want:?}, got {:?}",
            lines[0]
        );
    }
}

#[test]
fn json_output_lists_findings() {
    let o = check(&[
        "-f",
        "manifests/examples/quickstart",
        "-f",
        "manifests/examples/invalid/cluster-even-replicas.yaml",
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0]["field"], "spec.core.replicas");
    assert_eq!(findings[0]["object"], "MqttCluster/even-replicas");
    assert_eq!(findings[0]["severity"], "error");
    assert_eq!(v["checked"], 8);
}

#[test]
fn unreadable_input_exits_2() {
    let o = check(&["-f", "manifests/examples/does-not-exist"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does-not-exist"));

    let tmp = tempdir("syntax");
    let bad = tmp.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: [unclosed\n").unwrap();
    let o = check(&["-f", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("YAML syntax error"));

    let empty = tempdir("empty");
    let o = check(&["-f", empty.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a directory without YAML is unreadable input"
    );
}

#[test]
fn foreign_kinds_are_noted_and_ignored() {
    let tmp = tempdir("foreign");
    let f = tmp.join("mixed.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n---\n\
         apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: solo}\nspec: {core: {replicas: 1}}\n",
    )
    .unwrap();
    let o = check(&["-f", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("note:") && err.contains("ConfigMap/settings"),
        "{err}"
    );
    assert!(err.contains("checked 1 object(s)"), "{err}");
}

#[test]
fn warnings_do_not_fail_the_check() {
    let tmp = tempdir("warn");
    let f = tmp.join("p.yaml");
    std::fs::write(
        &f,
        "apiVersion: mqtt.operator.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: c}\nspec: {}\n---\n\
         apiVersion: mqtt.operator.dev/v1alpha1\nkind: DeviceIdentity\nmetadata: {name: d, labels: {a: b}}\n\
         spec: {clusterRef: {name: c}, deviceId: d}\n---\n\
         apiVersion: mqtt.operator.dev/v1alpha1\nkind: TopicPolicy\nmetadata: {name: p}\n\
         spec: {clusterRef: {name: c}, subjects: [{deviceSelector: {matchLabels: {a: b}}}],\n\
         rules: [{effect: allow, actions: [subscribe], topics: ['#']}]}\n",
    )
    .unwrap();
    let o = check(&["-f", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains("TopicPolicy/p: spec.rules[0].topics[0]: warning: device selectors may subscribe to '#'"), "{out}");
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mqtt-operator-check-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
