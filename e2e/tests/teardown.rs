//! The test bed leaves no process behind: not after `drop`, not when the test panics, not when
//! the test process aborts (the watchdog's job).

use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::process::{is_alive, wait_gone};
use e2e::{binaries_or_skip, TestBed, TestBedOptions};

/// A bed without CRDs (these tests are about processes), with the default controllers.
fn options() -> TestBedOptions {
    TestBedOptions {
        crd_dir: None,
        ..TestBedOptions::default()
    }
}

fn assert_all_alive(pids: &[(String, u32)]) {
    assert_eq!(
        pids.len(),
        4,
        "watchdog, etcd, kube-apiserver, kube-controller-manager: {pids:?}"
    );
    for (name, pid) in pids {
        assert!(
            is_alive(*pid),
            "{name} (pid {pid}) should run while the bed is up"
        );
    }
}

#[tokio::test]
async fn drop_kills_and_reaps_every_process_and_removes_the_directory() {
    if binaries_or_skip().is_none() {
        return;
    }
    let bed = TestBed::start_with(options())
        .await
        .expect("start test bed");
    let pids = bed.pids();
    assert_all_alive(&pids);
    let dir = bed.dir().to_path_buf();
    assert!(dir.join("kubeconfig").is_file());
    drop(bed);
    let numbers: Vec<u32> = pids.iter().map(|(_, p)| *p).collect();
    // Drop reaps synchronously, so nothing may be left even a moment later.
    let alive = wait_gone(&numbers, Duration::from_millis(1));
    assert!(
        alive.is_empty(),
        "still running after drop: {alive:?} of {pids:?}"
    );
    assert!(!dir.exists(), "{} should be removed on drop", dir.display());
}

#[test]
fn a_panicking_test_tears_the_bed_down() {
    if binaries_or_skip().is_none() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let bed = TestBed::start_with(options())
                .await
                .expect("start test bed");
            tx.send(bed.pids()).unwrap();
            panic!("deliberate panic while the bed is up");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread should have panicked");
    let pids = rx
        .recv_timeout(Duration::from_secs(1))
        .expect("pids sent before the panic");
    let numbers: Vec<u32> = pids.iter().map(|(_, p)| *p).collect();
    let alive = wait_gone(&numbers, Duration::from_secs(5));
    assert!(
        alive.is_empty(),
        "still running after the panic unwound: {alive:?} of {pids:?}"
    );
}

#[test]
fn an_aborted_test_process_leaves_no_orphans() {
    if binaries_or_skip().is_none() {
        return;
    }
    let probe = env!("CARGO_BIN_EXE_testbed-abort-probe");
    let output = Command::new(probe)
        .stdin(Stdio::null())
        .output()
        .expect("run testbed-abort-probe");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the probe should abort; status {}, stderr:\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PIDS "))
        .unwrap_or_else(|| panic!("no PIDS line; stdout:\n{stdout}\nstderr:\n{stderr}"));
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(
        pids.len(),
        4,
        "watchdog, etcd, kube-apiserver, kube-controller-manager: {line}"
    );
    // The watchdog polls every 0.2 s; give it ample time on a loaded machine.
    let alive = wait_gone(&pids, Duration::from_secs(15));
    assert!(
        alive.is_empty(),
        "orphans after the probe aborted: {alive:?} of {pids:?}"
    );
    // ...and removes the bed's directory shortly after.
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DIR "))
        .expect("DIR line");
    let dir = std::path::Path::new(dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !dir.exists(),
        "{} left behind after the probe aborted",
        dir.display()
    );
    // ...and drops the probe's pod stand-in lines from /etc/hosts.
    match stdout.lines().find_map(|l| l.strip_prefix("HOSTS ")) {
        Some(owner) => {
            let tag = format!("{} {owner}", e2e::standin::hosts::MARK);
            let hosts = || std::fs::read_to_string(e2e::standin::hosts::HOSTS_FILE).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while hosts().contains(&tag) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(
                !hosts().contains(&tag),
                "/etc/hosts still has {tag}:\n{}",
                hosts()
            );
        }
        None if e2e::in_ci() => {
            panic!("CI=true and the probe could not write /etc/hosts: {stderr}")
        }
        None => eprintln!("SKIPPED (not CI) the /etc/hosts part: not writable"),
    }
}
