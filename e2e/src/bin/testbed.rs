//! Runs a test bed by hand: `cargo run -p e2e --bin testbed`, then use the printed KUBECONFIG
//! with the bed's kubectl. Ctrl-C (or the end of stdin) tears it down.
#![forbid(unsafe_code)]

use std::io::BufRead;

use e2e::TestBed;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bed = match TestBed::start().await {
        Ok(bed) => bed,
        Err(e) => {
            eprintln!("testbed: {e}");
            std::process::exit(1);
        }
    };
    println!("export KUBECONFIG={}", bed.kubeconfig_path().display());
    println!("alias kubectl={}", bed.binaries().kubectl.display());
    println!("logs: {}/logs", bed.dir().display());
    println!("press Enter or Ctrl-C to stop");
    // Ctrl-C kills this process; the bed's watchdog then kills the servers and removes the
    // directory. Enter or end of input drops the bed here.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().next()).await;
    drop(bed);
}
