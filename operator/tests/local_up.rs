//! Acceptance test of `mqtt-operator local up` (the README's first command): runs the real binary
//! on a temp copy of the quickstart with a temp state directory and free loopback ports, runs the
//! printed `mosquitto_sub` / `mosquitto_pub` commands exactly as printed (Debian
//! mosquitto-clients), edits a TopicPolicy and measures apply -> enforced, then SIGINT and checks
//! every broker process is gone.
//!
//! The broker binary: `local up` looks for `mqtt-broker` next to itself. `cargo test --workspace`
//! builds it into the same target directory (the `broker` package has integration tests, so its
//! binaries are built); with `cargo test -p operator` alone the test builds it first with
//! `cargo build -p broker --bin mqtt-broker`.

#[path = "support/local_cluster.rs"]
mod local_cluster;
#[path = "support/tool.rs"]
mod tool;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use local_cluster::{lines_of, run_printed, wait_line, LocalUp};

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[test]
fn local_up_quickstart_end_to_end() {
    if tool::require("mosquitto_sub", "mosquitto-clients").is_none()
        || tool::require("mosquitto_pub", "mosquitto-clients").is_none()
    {
        return;
    }
    let started = Instant::now();
    let LocalUp {
        mut guard,
        out: up_out,
        mut seen,
        manifests,
        state,
        _tmp,
    } = LocalUp::start();
    let up_pid = guard.children[0].id() as i32;
    eprintln!(
        "local up (3 nodes) ready in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let output = seen.join("\n");
    assert!(
        output.contains("bridges are not started in local mode"),
        "{output}"
    );
    let subs: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("mosquitto_sub "))
        .collect();
    let pubs: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("mosquitto_pub "))
        .collect();
    assert_eq!((subs.len(), pubs.len()), (1, 2), "{output}");
    let (sub_cmd, pub_ok, pub_refused) = (subs[0].clone(), pubs[0].clone(), pubs[1].clone());
    assert!(
        sub_cmd.contains("gateway-lyon") && sub_cmd.contains("'sites/lyon/devices/+/telemetry/#'"),
        "{sub_cmd}"
    );
    assert!(
        pub_ok.contains("-t sites/lyon/devices/sensor-01/telemetry/temp"),
        "{pub_ok}"
    );
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(state.join("devices/sensor-01").join(f).is_file(), "{f}");
    }

    // The subscriber, as printed.
    let mut sub = Command::new("sh")
        .arg("-c")
        .arg(&sub_cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sub_out = lines_of(&mut sub);
    guard.children.push(sub);
    let mut received = Vec::new();

    // The allowed publish: delivered (retried while the subscription is being set up).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run_printed(&pub_ok);
        assert!(out.status.success(), "{pub_ok}: {out:?}");
        if wait_line(&sub_out, &mut received, Duration::from_millis(500), |l| {
            l.ends_with("hello from sensor-01")
        })
        .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "allowed publish not delivered in 20 s"
        );
    }

    // The refused publish: not delivered (the allowed publish after it is the marker).
    let _ = run_printed(&pub_refused);
    let out = run_printed(&pub_ok);
    assert!(out.status.success());
    let marker = wait_line(&sub_out, &mut received, Duration::from_secs(10), |l| {
        l.ends_with("hello from sensor-01") || l.ends_with("not allowed")
    });
    assert_eq!(
        marker.as_deref(),
        Some("sites/lyon/devices/sensor-01/telemetry/temp hello from sensor-01"),
        "refused publish was delivered: {received:?}"
    );

    // Hot reload: sensors may now publish any telemetry of their site.
    let policies = manifests.join("20-policies.yaml");
    let text = std::fs::read_to_string(&policies).unwrap();
    let edited = text.replacen(
        "      qos: [0, 1]\n",
        "      qos: [0, 1]\n    - effect: allow\n      actions: [publish]\n      topics: [\"sites/${label:site}/devices/+/telemetry/#\"]\n",
        1,
    );
    assert_ne!(edited, text);
    let tmp_file = manifests.join("20-policies.yaml.new");
    std::fs::write(&tmp_file, edited).unwrap();
    let applied = Instant::now();
    std::fs::rename(&tmp_file, &policies).unwrap();
    let enforced = loop {
        let _ = run_printed(&pub_refused);
        if wait_line(&sub_out, &mut received, Duration::from_millis(200), |l| {
            l.ends_with("not allowed")
        })
        .is_some()
        {
            break applied.elapsed();
        }
        assert!(
            applied.elapsed() < Duration::from_secs(15),
            "policy change not enforced within 15 s"
        );
    };
    eprintln!(
        "TopicPolicy edit -> enforced at the broker in {} ms (includes the 300 ms poll and one mosquitto_pub)",
        enforced.as_millis()
    );
    let reload = wait_line(&up_out, &mut seen, Duration::from_secs(5), |l| {
        l.contains("ACL revision") && l.contains("applied to 3/3 node(s)")
    });
    assert!(reload.is_some(), "no reload report:\n{}", seen.join("\n"));
    eprintln!("{}", reload.unwrap().trim());

    // SIGINT: local up stops every broker and exits.
    let broker_pids: Vec<i32> = (0..3)
        .map(|n| {
            std::fs::read_to_string(state.join(format!("nodes/core-{n}/broker.pid")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(broker_pids.iter().all(|p| alive(*p)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up_pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let up = &mut guard.children[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = up.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "local up still running 20 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "local up exit status {status}");
    for pid in broker_pids {
        assert!(
            !alive(pid),
            "broker pid {pid} still alive after local up exited"
        );
    }
    assert!(!state.join("local.pid").exists());
}
