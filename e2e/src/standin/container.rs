//! One running pod: its container process (stopped with SIGTERM, then SIGKILL after a bound)
//! and the HTTP readiness probe kubelet would run against it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::address::AddressLease;
use super::PodProcess;
use crate::process::ManagedProcess;

/// Timeout of one readiness probe.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A pod whose process runs (or is being restarted).
pub(super) struct RunningPod {
    pub(super) pod: Pod,
    pub(super) name: String,
    pub(super) uid: String,
    pub(super) lease: AddressLease,
    pub(super) container: Container,
    pub(super) dir: PathBuf,
    pub(super) process: Option<ManagedProcess>,
    pub(super) start_time: String,
    pub(super) started_at: String,
    pub(super) ready: bool,
    pub(super) restarts: u32,
    pub(super) restart_at: Option<Instant>,
    pub(super) reported: Option<(bool, u32, String)>,
}

impl RunningPod {
    pub(super) fn describe(&self) -> PodProcess {
        PodProcess {
            pod: self.name.clone(),
            uid: self.uid.clone(),
            ip: self.lease.ip(),
            pid: self.process.as_ref().map_or(0, ManagedProcess::pid),
            dir: self.dir.clone(),
        }
    }

    /// SIGTERM, up to `grace` for the process to exit, then SIGKILL; reaped either way. The
    /// address is released when `self` is dropped.
    pub(super) fn terminate(mut self, grace: Duration) {
        if let Some(p) = self.process.take() {
            stop_process(&p, grace);
        }
    }

    pub(super) fn ip(&self) -> Ipv4Addr {
        self.lease.ip()
    }
}

pub(super) fn stop_process(p: &ManagedProcess, grace: Duration) {
    if p.exited().is_none() {
        let _ = kill(Pid::from_raw(p.pid() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while p.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    p.kill();
}

/// An HTTP GET of `path` on `ip:port`: ready on a 2xx/3xx answer within [`PROBE_TIMEOUT`].
pub(super) async fn probe(ip: Ipv4Addr, port: u16, path: &str) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: mqtt-e2e-standin\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 16];
        let mut got = 0;
        while got < 12 {
            let n = stream.read(&mut head[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let text = std::str::from_utf8(&head[..got]).ok()?;
        let code: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
        Ok(Some(true))
    )
}
