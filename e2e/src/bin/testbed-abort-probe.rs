//! Helper for the e2e teardown test: starts a test bed (no CRDs), prints `PIDS <pid>...` of every
//! bed process on stdout, then aborts without running any destructor. The test then checks that
//! the bed's watchdog killed them all. When `/etc/hosts` is writable it also writes a pod
//! stand-in line tagged with its pid (printed as `HOSTS <tag>`), which the watchdog must remove.
#![forbid(unsafe_code)]

use std::io::Write;

use e2e::{TestBed, TestBedOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = TestBedOptions {
        crd_dir: None,
        ..TestBedOptions::default()
    };
    let bed = match TestBed::start_with(options).await {
        Ok(bed) => bed,
        Err(e) => {
            eprintln!("testbed-abort-probe: start failed: {e}");
            std::process::exit(2);
        }
    };
    let pids: Vec<String> = bed.pids().iter().map(|(_, pid)| pid.to_string()).collect();
    println!("PIDS {}", pids.join(" "));
    println!("DIR {}", bed.dir().display());
    if e2e::standin::hosts::check_writable().is_ok() {
        let owner = e2e::standin::hosts::owner(std::process::id(), "abort-probe");
        let entry = e2e::standin::hosts::HostEntry {
            ip: std::net::Ipv4Addr::new(127, 77, 255, 254),
            names: vec!["abort-probe.standin.invalid".into()],
        };
        match e2e::standin::hosts::update(&owner, &[entry]) {
            Ok(()) => println!("HOSTS {owner}"),
            Err(e) => eprintln!("testbed-abort-probe: writing /etc/hosts: {e}"),
        }
    }
    let _ = std::io::stdout().flush();
    std::process::abort();
}
