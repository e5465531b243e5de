//! Loopback addresses for stand-in pods. A real pod gets its own IP from its network namespace;
//! here each pod gets its own `127.77.x.y` (never `127.0.0.1`, which the bed and other tests
//! use). An address is held by an exclusive `flock` on `/tmp/mqtt-e2e-standin/addrs/<ip>`: the
//! kernel releases it when the holder closes the file or dies, so concurrently running test
//! binaries never share an address and a crashed one leaks nothing.

use std::fs::{self, File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Directory of the address lock files (shared by every test binary on the machine).
pub const LOCK_DIR: &str = "/tmp/mqtt-e2e-standin/addrs";

/// Addresses handed out: `127.77.<hi>.<lo>` with `lo` in 2..=254, so never a `.0`/`.255` and
/// never in `127.0.0.0/24`.
const HI_RANGE: u32 = 256;
const LO_FIRST: u32 = 2;
const LO_COUNT: u32 = 253;

/// No address could be reserved.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// The lock directory or a lock file could not be created.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Every address is held.
    #[error("all {0} stand-in loopback addresses are in use")]
    Exhausted(u32),
}

/// The `n`-th candidate address (wrapping over the whole range).
pub fn candidate(n: u32) -> Ipv4Addr {
    let n = n % (HI_RANGE * LO_COUNT);
    Ipv4Addr::new(
        127,
        77,
        (n / LO_COUNT) as u8,
        (LO_FIRST + n % LO_COUNT) as u8,
    )
}

/// A reserved address; dropping it releases the address.
#[derive(Debug)]
pub struct AddressLease {
    ip: Ipv4Addr,
    _lock: Flock<File>,
}

impl AddressLease {
    /// The reserved address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

/// Reserves a free address, trying candidates from `start` on (callers spread their starting
/// points so a just-released address is not reused at once while its sockets linger).
pub fn lease(start: u32) -> Result<AddressLease, AddressError> {
    lease_in(Path::new(LOCK_DIR), start)
}

/// [`lease`] with lock files in `dir`.
pub fn lease_in(dir: &Path, start: u32) -> Result<AddressLease, AddressError> {
    fs::create_dir_all(dir).map_err(|source| AddressError::Io {
        action: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    let total = HI_RANGE * LO_COUNT;
    for i in 0..total {
        let ip = candidate(start.wrapping_add(i));
        let path = dir.join(ip.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| AddressError::Io {
                action: "opening",
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(AddressLease { ip, _lock: lock }),
            Err((_, Errno::EWOULDBLOCK)) => continue,
            Err((_, errno)) => {
                return Err(AddressError::Io {
                    action: "locking",
                    path,
                    source: std::io::Error::from(errno),
                })
            }
        }
    }
    Err(AddressError::Exhausted(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_stay_in_127_77_and_avoid_network_and_broadcast_octets() {
        for n in [0, 1, 252, 253, 254, 64_000, u32::MAX] {
            let ip = candidate(n);
            let [a, b, _, d] = ip.octets();
            assert_eq!((a, b), (127, 77), "{ip}");
            assert!((2..=254).contains(&d), "{ip}");
        }
        assert_eq!(candidate(0), Ipv4Addr::new(127, 77, 0, 2));
        assert_eq!(candidate(253), Ipv4Addr::new(127, 77, 1, 2));
    }

    #[test]
    fn a_held_address_is_not_handed_out_again_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let a = lease_in(dir.path(), 5).unwrap();
        let b = lease_in(dir.path(), 5).unwrap();
        assert_eq!(a.ip(), candidate(5));
        assert_eq!(b.ip(), candidate(6));
        drop(a);
        let c = lease_in(dir.path(), 5).unwrap();
        assert_eq!(c.ip(), candidate(5));
    }
}
