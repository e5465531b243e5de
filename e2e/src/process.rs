//! Child processes of a test bed, and how they are guaranteed to die.
//!
//! Every process a [`crate::TestBed`] starts joins one process group whose leader is a tiny
//! `sh` watchdog. The watchdog polls the test process; when the test process is gone (normal exit
//! with a shared bed held in a `static`, `abort`, `SIGKILL`, Ctrl-C) it kills its own group, so
//! no etcd or apiserver outlives the test binary. Dropping the bed kills the group directly and
//! reaps every child, so after `drop` the processes are gone, not zombies.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Errors starting or inspecting test-bed processes.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The watchdog shell could not be started.
    #[error("starting the watchdog (sh): {0}")]
    Watchdog(#[source] std::io::Error),
    /// A log file could not be created.
    #[error("creating log file {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A process could not be spawned.
    #[error("spawning {name} ({program}): {source}")]
    Spawn {
        /// Short name of the process (etcd, kube-apiserver...).
        name: String,
        /// The program path.
        program: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// No free port could be reserved on 127.0.0.1.
    #[error("reserving a free port on 127.0.0.1: {0}")]
    Port(#[source] std::io::Error),
}

/// A process group led by a watchdog that kills the group when the test process disappears.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: u32,
    watchdog: Mutex<Option<Child>>,
}

/// The watchdog: while the test process (`$1`) lives, sleep; then drop the test process's pod
/// stand-in lines from `/etc/hosts` (see [`crate::standin::hosts`]) and kill the whole group it
/// leads. With a directory to remove (`$2`), the kill is done by a `setsid` child (outside the
/// group, so it survives the kill) that then removes the directory; otherwise the watchdog kills
/// its own group (`0`).
fn watchdog_script() -> String {
    format!(
        "while kill -0 \"$1\" 2>/dev/null; do sleep 0.2; done; {}; {WATCHDOG_KILL}",
        crate::standin::hosts::watchdog_cleanup_script()
    )
}

const WATCHDOG_KILL: &str = "if [ -n \"$2\" ]; then \
       exec setsid sh -c 'kill -9 -\"$1\"; sleep 0.5; rm -rf -- \"$2\"' cleaner \"$$\" \"$2\"; \
     fi; \
     kill -9 0";

impl ProcessGroup {
    /// Starts the watchdog as leader of a new process group. When the test process dies without
    /// dropping the group, the watchdog kills the group and then removes `cleanup_dir`, if given.
    pub fn start(cleanup_dir: Option<&Path>) -> Result<Self, ProcessError> {
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(watchdog_script())
            .arg("mqtt-e2e-watchdog")
            .arg(std::process::id().to_string())
            .arg(
                cleanup_dir
                    .map(|d| d.as_os_str().to_owned())
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(ProcessError::Watchdog)?;
        Ok(Self {
            pgid: watchdog.id(),
            watchdog: Mutex::new(Some(watchdog)),
        })
    }

    /// The process group id (the watchdog's pid).
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// The watchdog's pid (equal to [`Self::pgid`]).
    pub fn watchdog_pid(&self) -> u32 {
        self.pgid
    }

    /// Spawns `command` into this group with stdout and stderr appended to `log`.
    pub fn spawn(
        &self,
        name: &str,
        mut command: Command,
        log: &Path,
    ) -> Result<ManagedProcess, ProcessError> {
        let out = File::create(log).map_err(|source| ProcessError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| ProcessError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(self.pgid as i32)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                name: name.to_string(),
                program,
                source,
            })?;
        Ok(ManagedProcess {
            name: name.to_string(),
            pid: child.id(),
            child: Mutex::new(Some(child)),
            log: log.to_path_buf(),
        })
    }

    /// Kills every process of the group (including the watchdog) with SIGKILL and reaps the
    /// watchdog. Children spawned with [`Self::spawn`] are reaped by their own handles.
    pub fn kill_all(&self) {
        // ESRCH (group already gone) is fine: that is the goal.
        let _ = killpg(Pid::from_raw(self.pgid as i32), Signal::SIGKILL);
        if let Some(mut watchdog) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// One process of the bed: its pid, its log, and a handle that kills and reaps it.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

impl ManagedProcess {
    /// Short name (etcd, kube-apiserver, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Path of the file receiving the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(description)` if the process has exited (it is reaped then).
    pub fn exited(&self) -> Option<String> {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut().map(Child::try_wait) {
            None => Some("already stopped".to_string()),
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(format!("cannot query: {e}")),
        }
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Sends SIGKILL and reaps the process. Idempotent.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file (at most the last 64 KiB are read).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let mut raw = Vec::new();
    if file.read_to_end(&mut raw).is_ok() {
        text = String::from_utf8_lossy(&raw).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reserves `n` distinct free TCP ports on 127.0.0.1 (bound together, then released; the window
/// before a server binds one is small, and a failed start is retried by the caller).
pub fn free_ports(n: usize) -> Result<Vec<u16>, ProcessError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProcessError::Port)?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProcessError::Port)
}

/// Whether `pid` is a live process. A zombie (exited, waiting to be reaped by its parent) counts
/// as dead: it runs no code and holds no ports.
pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // Format: "pid (comm) S ..."; comm may contain spaces or parens, so split after the last ')'.
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
    }
}

/// Waits until none of `pids` is alive, or `timeout` passes; returns those still alive.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| is_alive(*p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
