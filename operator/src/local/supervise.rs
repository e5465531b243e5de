//! The broker processes of `local up`: finding the binary, starting one per node, waiting for
//! `/readyz`, pushing reloads to the push endpoint, stopping them. Loopback only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a broker could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The broker binary is nowhere to be found.
    #[error(
        "the broker binary `mqtt-broker` is not next to {exe} and MQTT_BROKER_BIN is not set; \
         build it with `cargo build -p broker` (or set MQTT_BROKER_BIN=/path/to/mqtt-broker)"
    )]
    NoBinary {
        /// The running executable.
        exe: String,
    },
    /// Spawning failed.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// The error.
        source: std::io::Error,
    },
    /// A node did not become ready in time.
    #[error("node core-{node} not ready after {secs} s (log: {log})\n{tail}")]
    NotReady {
        /// Node index.
        node: usize,
        /// The timeout.
        secs: u64,
        /// Its log file.
        log: String,
        /// The end of the log.
        tail: String,
    },
    /// A node exited while starting.
    #[error("node core-{node} exited ({status}) while starting (log: {log})\n{tail}")]
    Exited {
        /// Node index.
        node: usize,
        /// Exit status.
        status: String,
        /// Its log file.
        log: String,
        /// The end of the log.
        tail: String,
    },
    /// An HTTP exchange failed.
    #[error("127.0.0.1:{port}{path}: {message}")]
    Http {
        /// Port.
        port: u16,
        /// Request path.
        path: String,
        /// What happened.
        message: String,
    },
    /// Other IO.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Finds `mqtt-broker`: `MQTT_BROKER_BIN` when set, else next to the running executable.
pub fn broker_binary() -> Result<PathBuf, SuperviseError> {
    if let Some(p) = std::env::var_os("MQTT_BROKER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let sibling = exe.with_file_name("mqtt-broker");
    if sibling.is_file() {
        return Ok(sibling);
    }
    Err(SuperviseError::NoBinary {
        exe: exe.display().to_string(),
    })
}

/// One running broker process.
pub struct Node {
    /// Index (0-based; raft id = index + 1).
    pub index: usize,
    /// Its push/health port.
    pub http: u16,
    /// Its MQTTS port.
    pub mqtts: u16,
    /// Its log file.
    pub log: PathBuf,
    child: Child,
}

impl Node {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts one broker for a rendered node directory; stdout/stderr go to `<node>/broker.log`.
pub fn spawn(
    binary: &Path,
    index: usize,
    node_dir: &Path,
    ports: (u16, u16),
) -> Result<Node, SuperviseError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SuperviseError::Io { path, source }
    };
    let run = node_dir.join("run");
    std::fs::create_dir_all(&run).map_err(io(&run))?;
    let log = node_dir.join("broker.log");
    let out = std::fs::File::create(&log).map_err(io(&log))?;
    let err = out.try_clone().map_err(io(&log))?;
    let child = Command::new(binary)
        .arg("--config-dir")
        .arg(node_dir.join("config"))
        .arg("--runtime-dir")
        .arg(&run)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: a terminal's Ctrl-C reaches `local up` only, which stops the
        // brokers in order.
        .process_group(0)
        .spawn()
        .map_err(|source| SuperviseError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
    let pid_file = node_dir.join("broker.pid");
    std::fs::write(&pid_file, format!("{}\n", child.id())).map_err(io(&pid_file))?;
    Ok(Node {
        index,
        http: ports.1,
        mqtts: ports.0,
        log,
        child,
    })
}

/// The last lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until every node answers 200 on `/readyz`; `progress` is called once per node when it
/// becomes ready.
pub fn wait_ready(
    nodes: &mut [Node],
    timeout: Duration,
    mut progress: impl FnMut(&Node, Duration),
) -> Result<(), SuperviseError> {
    let start = Instant::now();
    let mut ready = vec![false; nodes.len()];
    while ready.iter().any(|r| !r) {
        for (i, node) in nodes.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(SuperviseError::Exited {
                    node: node.index,
                    status: status.to_string(),
                    log: node.log.display().to_string(),
                    tail: log_tail(&node.log, 20),
                });
            }
            if matches!(http(node.http, "GET", "/readyz", None, b""), Ok((200, _))) {
                ready[i] = true;
                progress(node, start.elapsed());
            }
        }
        if start.elapsed() > timeout {
            let i = ready.iter().position(|r| !r).unwrap_or(0);
            return Err(SuperviseError::NotReady {
                node: nodes[i].index,
                secs: timeout.as_secs(),
                log: nodes[i].log.display().to_string(),
                tail: log_tail(&nodes[i].log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Has any node exited? Returns its index and status.
pub fn exited(nodes: &mut [Node]) -> Option<(usize, String)> {
    nodes.iter_mut().find_map(|n| {
        n.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| (n.index, s.to_string()))
    })
}

/// Stops every node: SIGTERM, then SIGKILL after `grace`; waits for each (no zombies).
pub fn stop(nodes: &mut [Node], grace: Duration) {
    for n in nodes.iter() {
        terminate(n.child.id());
    }
    let deadline = Instant::now() + grace;
    for n in nodes.iter_mut() {
        loop {
            match n.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = n.child.kill();
                    let _ = n.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Sends SIGTERM to a process (ignores a process that is already gone).
pub fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Is a process with this id alive?
pub fn alive(pid: u32) -> bool {
    i32::try_from(pid)
        .is_ok_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
}

/// A minimal HTTP/1.1 exchange with a node on 127.0.0.1 (5 s timeouts): (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<(u16, String), SuperviseError> {
    let err = |message: String| SuperviseError::Http {
        port,
        path: path.to_owned(),
        message,
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|_| s.set_write_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| err(e.to_string()))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| err(e.to_string()))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| err("no HTTP status line".into()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
