//! The operator's controllers run in-process against the shared bed, exactly as
//! `mqtt-operator run` runs them: one copy per test binary, on its own thread and runtime.

use std::sync::OnceLock;

use operator::controllers;

/// Starts the controllers once for this test binary. Operator logs go to stderr (`RUST_LOG`,
/// default `warn`) so a failing test shows why.
pub fn operator_running(bed: &'static e2e::TestBed) {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("operator runtime");
            rt.block_on(async {
                let client = bed.client().await.expect("operator client");
                let listen = "127.0.0.1:0".parse().expect("address");
                controllers::run(client, controllers::RunOptions::new(listen))
                    .await
                    .expect("operator stopped");
            });
        });
    });
}
