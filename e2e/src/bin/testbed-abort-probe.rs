//! Helper for the e2e teardown test: starts a test bed (no CRDs), prints `PIDS <pid>...` of every
//! bed process on stdout, then aborts without running any destructor. The test then checks that
//! the bed's watchdog killed them all.
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
    let _ = std::io::stdout().flush();
    std::process::abort();
}
