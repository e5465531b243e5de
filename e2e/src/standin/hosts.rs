//! Pod and Service DNS names through `/etc/hosts`: glibc (and so the broker, `mosquitto_pub` and
//! rumqttc through `getaddrinfo`) re-reads the file on every lookup, so names resolve for real
//! and TLS hostname verification is exercised exactly as in a cluster.
//!
//! Every line a stand-in writes ends with `# mqtt-e2e-standin pid=<test pid> ns=<namespace>`.
//! Edits take an exclusive `flock` on [`LOCK_FILE`] and rewrite `/etc/hosts` in place (it is
//! often a bind mount, which a rename would not replace). Lines of dead test processes are
//! dropped on every edit, and the bed's watchdog drops its process's lines when the test process
//! dies without cleaning up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The file edited.
pub const HOSTS_FILE: &str = "/etc/hosts";
/// Serialises edits between stand-ins (and the watchdog's cleanup, which uses `flock(1)`).
pub const LOCK_FILE: &str = "/tmp/mqtt-e2e-hosts.lock";
/// Marker starting the trailing comment of every line we own.
pub const MARK: &str = "# mqtt-e2e-standin";

/// `/etc/hosts` could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct HostsError {
    /// What was being done.
    pub action: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The IO error.
    pub source: std::io::Error,
}

/// One hosts line: an address and its names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostEntry {
    /// The address.
    pub ip: Ipv4Addr,
    /// Names resolving to it.
    pub names: Vec<String>,
}

/// Owner tag of a stand-in: test process `pid`, namespace `ns`.
pub fn owner(pid: u32, ns: &str) -> String {
    format!("pid={pid} ns={ns}")
}

/// The owner tag of a line we wrote, `None` for any other line.
fn line_owner(line: &str) -> Option<&str> {
    line.split_once(MARK).map(|(_, rest)| rest.trim())
}

fn owner_pid(tag: &str) -> Option<u32> {
    tag.strip_prefix("pid=")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `text` with every line of `owner` replaced by `entries`, and lines of test processes that
/// `alive` says are gone dropped. Other lines are kept byte for byte. Pure.
pub fn render(
    text: &str,
    owner: &str,
    entries: &[HostEntry],
    alive: impl Fn(u32) -> bool,
) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let keep = match line_owner(line) {
            None => true,
            Some(tag) => tag != owner && owner_pid(tag).is_some_and(&alive),
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    for e in entries.iter().filter(|e| !e.names.is_empty()) {
        out.push_str(&format!(
            "{}\t{}\t{MARK} {owner}\n",
            e.ip,
            e.names.join(" ")
        ));
    }
    out
}

/// Replaces `owner`'s lines in `/etc/hosts` with `entries` (empty: removes them).
pub fn update(owner: &str, entries: &[HostEntry]) -> Result<(), HostsError> {
    update_file(Path::new(HOSTS_FILE), Path::new(LOCK_FILE), owner, entries)
}

/// [`update`] on any file, for tests.
pub fn update_file(
    hosts: &Path,
    lock: &Path,
    owner: &str,
    entries: &[HostEntry],
) -> Result<(), HostsError> {
    let err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| HostsError {
            action,
            path,
            source,
        }
    };
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(err("opening", lock))?;
    let _guard = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| err("locking", lock)(std::io::Error::from(errno)))?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(hosts)
        .map_err(err("opening", hosts))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(err("reading", hosts))?;
    let new = render(&text, owner, entries, crate::process::is_alive);
    if new != text {
        file.seek(SeekFrom::Start(0))
            .map_err(err("seeking", hosts))?;
        file.set_len(0).map_err(err("truncating", hosts))?;
        file.write_all(new.as_bytes())
            .map_err(err("writing", hosts))?;
        file.sync_all().map_err(err("syncing", hosts))?;
    }
    Ok(())
}

/// Whether `/etc/hosts` can be edited (open for writing, lock file creatable).
pub fn check_writable() -> Result<(), String> {
    OpenOptions::new()
        .append(true)
        .open(HOSTS_FILE)
        .map_err(|e| format!("{HOSTS_FILE} is not writable ({e}); the pod stand-in resolves pod DNS names through it"))?;
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| format!("cannot create {LOCK_FILE}: {e}"))?;
    Ok(())
}

/// The shell the bed's watchdog runs (with the dead test process's pid as `$1`) to drop its
/// lines: in place, under the same lock, only when there is something to drop.
pub fn watchdog_cleanup_script() -> String {
    format!(
        "if grep -qF \"{MARK} pid=$1 \" {HOSTS_FILE} 2>/dev/null; then \
           flock {LOCK_FILE} sh -c 'grep -vF \"{MARK} pid=$1 \" {HOSTS_FILE} > {HOSTS_FILE}.mqtt-e2e.$1; \
           cat {HOSTS_FILE}.mqtt-e2e.$1 > {HOSTS_FILE}; rm -f {HOSTS_FILE}.mqtt-e2e.$1' sh \"$1\"; \
         fi"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: [u8; 4], names: &[&str]) -> HostEntry {
        HostEntry {
            ip: Ipv4Addr::from(ip),
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    const BASE: &str = "127.0.0.1 localhost\n::1 ip6-localhost\n";

    #[test]
    fn render_adds_then_replaces_then_removes_only_its_own_lines() {
        let me = owner(10, "ns-1");
        let other = owner(11, "ns-1");
        let alive = |_| true;
        let one = render(BASE, &me, &[entry([127, 77, 0, 2], &["a.svc", "a"])], alive);
        assert_eq!(
            one,
            format!("{BASE}127.77.0.2\ta.svc a\t{MARK} pid=10 ns=ns-1\n")
        );
        let two = render(&one, &other, &[entry([127, 77, 0, 3], &["b.svc"])], alive);
        let three = render(&two, &me, &[entry([127, 77, 0, 4], &["c.svc"])], alive);
        assert!(!three.contains("a.svc") && three.contains("b.svc") && three.contains("c.svc"));
        let gone = render(&three, &me, &[], alive);
        assert_eq!(
            gone,
            render(BASE, &other, &[entry([127, 77, 0, 3], &["b.svc"])], alive)
        );
    }

    #[test]
    fn owners_differing_only_by_namespace_suffix_are_distinct() {
        let text = render(
            BASE,
            &owner(1, "ns-10"),
            &[entry([127, 77, 0, 9], &["x"])],
            |_| true,
        );
        let after = render(&text, &owner(1, "ns-0"), &[], |_| true);
        assert!(after.contains("127.77.0.9"), "{after}");
    }

    #[test]
    fn lines_of_dead_processes_are_dropped_and_empty_entries_skipped() {
        let text = render(
            BASE,
            &owner(99, "a"),
            &[entry([127, 77, 0, 5], &["dead"])],
            |_| true,
        );
        let after = render(&text, &owner(7, "b"), &[entry([127, 77, 0, 6], &[])], |p| {
            p != 99
        });
        assert_eq!(after, BASE);
    }

    #[test]
    fn update_file_edits_in_place_and_the_watchdog_script_removes_a_pid_lines() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        let lock = dir.path().join("lock");
        std::fs::write(&hosts, BASE).unwrap();
        let me = owner(std::process::id(), "t");
        update_file(&hosts, &lock, &me, &[entry([127, 77, 1, 2], &["p.svc"])]).unwrap();
        let text = std::fs::read_to_string(&hosts).unwrap();
        assert!(text.starts_with(BASE) && text.contains("p.svc"), "{text}");
        let script = watchdog_cleanup_script()
            .replace(HOSTS_FILE, hosts.to_str().unwrap())
            .replace(LOCK_FILE, lock.to_str().unwrap());
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .arg("sh")
            .arg(std::process::id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(&hosts).unwrap(), BASE);
    }
}
