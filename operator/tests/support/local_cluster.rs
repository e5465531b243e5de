//! Running `mqtt-operator local up` from a test: the broker binary, free loopback ports, a
//! copy of the manifests, the child's output lines, a guard that stops what is left. Included
//! with `#[path]` by the tests that need a real local cluster (local_up, push_nodes).

// Each including test uses a subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// `MQTT_BROKER_BIN` when set, else the broker binary next to the operator binary, built if
/// missing.
pub fn broker_binary(operator: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("MQTT_BROKER_BIN") {
        return PathBuf::from(p);
    }
    let broker = operator.with_file_name("mqtt-broker");
    if !broker.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!("building the broker: {cargo} build -p broker --bin mqtt-broker");
        let status = Command::new(cargo)
            .args(["build", "-p", "broker", "--bin", "mqtt-broker"])
            .status()
            .expect("run cargo build -p broker");
        assert!(status.success(), "cargo build -p broker failed");
    }
    assert!(broker.is_file(), "no broker binary at {}", broker.display());
    broker
}

/// A base port with 30 free ports after it (3 nodes x 10).
pub fn free_base() -> u16 {
    let seed = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20_000 + (seed.wrapping_mul(31).wrapping_add(attempt * 97)) % 40_000;
        let free = (base..base + 30).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free range of 30 loopback ports found in 200 attempts");
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Lines of a child's stdout, through a channel (read on a thread).
pub fn lines_of(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line satisfying `want`; everything read is appended to `seen`.
pub fn wait_line(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return Some(line);
                }
            }
            Err(_) => return None,
        }
    }
}

/// Kills what is still running when the test ends (also on panic).
pub struct Guard {
    /// The children, stopped in order.
    pub children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                if let Ok(pid) = i32::try_from(c.id()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Runs one printed command with `sh -c`, exactly as printed (10 s bound).
pub fn run_printed(cmd: &str) -> std::process::Output {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A running `local up` of a copy of the quickstart: 3 broker processes on loopback.
pub struct LocalUp {
    /// Stops `local up` (and with it the brokers) when dropped; later children too.
    pub guard: Guard,
    /// `local up`'s stdout lines not read yet.
    pub out: Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
    /// The manifests directory `local up` watches.
    pub manifests: PathBuf,
    /// The state directory.
    pub state: PathBuf,
    /// The temporary directory holding both (removed when dropped).
    pub _tmp: tempfile::TempDir,
}

impl LocalUp {
    /// Starts `local up` on a fresh copy of the quickstart and waits (120 s at most) until it
    /// watches the manifests, i.e. every node answered `/readyz`.
    pub fn start() -> LocalUp {
        let operator = PathBuf::from(env!("CARGO_BIN_EXE_mqtt-operator"));
        let broker = broker_binary(&operator);
        let tmp = tempfile::tempdir().unwrap();
        let manifests = tmp.path().join("quickstart");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/quickstart"),
            &manifests,
        );
        let state = tmp.path().join("state");
        let mut up = Command::new(&operator)
            .args(["local", "up", "-f"])
            .arg(&manifests)
            .arg("-d")
            .arg(&state)
            .args(["--base-port", &free_base().to_string()])
            .env("MQTT_BROKER_BIN", &broker)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines_of(&mut up);
        let guard = Guard { children: vec![up] };
        let mut seen = Vec::new();
        let ready = wait_line(&out, &mut seen, Duration::from_secs(120), |l| {
            l.starts_with("Watching the manifests")
        });
        assert!(
            ready.is_some(),
            "local up not ready within 120 s; output:\n{}",
            seen.join("\n")
        );
        LocalUp {
            guard,
            out,
            seen,
            manifests,
            state,
            _tmp: tmp,
        }
    }

    /// The printed lines starting with `prefix`.
    pub fn printed(&self, prefix: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The HTTP port of each node, from the `core-<n> starting: ..., http :<port>` lines.
    pub fn http_ports(&self) -> Vec<u16> {
        let mut ports: Vec<(usize, u16)> = self
            .seen
            .iter()
            .filter_map(|l| {
                let rest = l.split("core-").nth(1)?;
                let (n, tail) = rest.split_once(" starting:")?;
                let port = tail.rsplit_once("http :")?.1.trim().parse().ok()?;
                Some((n.parse().ok()?, port))
            })
            .collect();
        ports.sort_unstable();
        ports.into_iter().map(|(_, p)| p).collect()
    }
}
