//! Leader election: one writer, takeover after a crash, a lost Lease stops `run`, release on
//! a clean stop; and the real binary's exit codes.

use super::*;

#[tokio::test]
async fn exactly_one_instance_writes_and_the_standby_takes_over() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("elect").await.expect("namespace");

    let a = Instance::start(admin_config(bed).await, "op-a", &[&ns], Some(&ns));
    wait_holder(&client, &ns, "op-a", Duration::from_secs(30)).await;
    let b = Instance::start(admin_config(bed).await, "op-b", &[&ns], Some(&ns));
    a.wait_leader_metric(1).await;
    // The standby serves /healthz (so its Pod is Ready) and says it does not lead.
    b.wait_leader_metric(0).await;

    apply_cluster(&client, &ns).await;
    wait_cluster(&client, &ns, "CertificatesReady", certificates_ready).await;
    // A couple of standby retry periods during which the leader is busy reconciling.
    tokio::time::sleep(RETRY_PERIOD * 2).await;
    assert!(
        !a.object_writes().is_empty(),
        "the leader reconciled the cluster"
    );
    assert_eq!(
        b.object_writes(),
        Vec::<Sent>::new(),
        "the standby wrote while another replica held the Lease"
    );
    assert_eq!(
        b.lease_writes(),
        Vec::<Sent>::new(),
        "the standby only reads a live Lease"
    );
    assert!(
        b.log.sent().iter().any(|s| s.path.contains("/leases/")),
        "the standby looked at the Lease"
    );

    // Kill the leader without releasing: the standby takes over once the Lease expired.
    a.kill();
    let took = wait_holder(
        &client,
        &ns,
        "op-b",
        LEASE_DURATION + RETRY_PERIOD + Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "takeover after the leader died: {took:.1?} (lease {LEASE_DURATION:?}, retry {RETRY_PERIOD:?})"
    );
    assert!(
        took <= LEASE_DURATION + RETRY_PERIOD + Duration::from_secs(3),
        "takeover took {took:?}"
    );
    b.wait_leader_metric(1).await;
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get(LEASE_NAME)
        .await
        .expect("Lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(
        spec.lease_transitions,
        Some(2),
        "created by a, taken over by b"
    );
    assert_eq!(spec.lease_duration_seconds, Some(6));

    // The new leader reconciles a change.
    let api = Api::<MqttCluster>::namespaced(client.clone(), &ns);
    let changed = api
        .patch(
            "quickstart",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"limits": {"maxConnections": 12345}}})),
        )
        .await
        .expect("patch the cluster");
    let generation = changed.metadata.generation.expect("generation");
    let before = b.object_writes().len();
    wait_cluster(&client, &ns, "observedGeneration of the change", |c| {
        c.status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .is_some_and(|g| g >= generation)
    })
    .await;
    assert!(
        b.object_writes().len() > before,
        "the new leader wrote the change"
    );
}

#[tokio::test]
async fn a_leader_that_loses_the_lease_stops_with_an_error() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("lost").await.expect("namespace");
    let a = Instance::start(admin_config(bed).await, "op-a", &[&ns], Some(&ns));
    wait_holder(&client, &ns, "op-a", Duration::from_secs(30)).await;
    a.wait_leader_metric(1).await;

    // Someone else (e.g. a replica that saw the Lease expire during a network partition)
    // writes itself in as the holder, with a fresh renewal.
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    leases
        .patch(
            LEASE_NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "intruder",
                "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    k8s_openapi::jiff::Timestamp::now()
                ),
            }})),
        )
        .await
        .expect("steal the Lease");
    let result = wait_ended(&a, RETRY_PERIOD * 2 + Duration::from_secs(10)).await;
    let error = result.expect_err("run() must fail when leadership is lost");
    assert!(
        error.contains("lost leadership") && error.contains("intruder"),
        "{error}"
    );
    assert_eq!(
        holder(&client, &ns).await.as_deref(),
        Some("intruder"),
        "the stopped leader did not write the Lease back"
    );
}

#[tokio::test]
async fn a_clean_stop_releases_the_lease_at_once() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("release").await.expect("namespace");
    let a = Instance::start(admin_config(bed).await, "op-a", &[&ns], Some(&ns));
    wait_holder(&client, &ns, "op-a", Duration::from_secs(30)).await;
    // The elector's release, as run() calls it when the controllers stop on SIGTERM.
    let mut config = LeaderElection::new(LEASE_NAME, &ns, "op-a");
    config.lease_duration = LEASE_DURATION;
    a.kill();
    controllers::election::Elector::new(client.clone(), config)
        .release()
        .await;
    assert_eq!(holder(&client, &ns).await, None, "released");
    let b = Instance::start(admin_config(bed).await, "op-b", &[&ns], Some(&ns));
    let took = wait_holder(&client, &ns, "op-b", Duration::from_secs(30)).await;
    assert!(
        took < LEASE_DURATION,
        "a released Lease is taken at once, not after its duration: {took:?}"
    );
    drop(b);
}

/// The `mqtt-operator` binary of this build (built on demand, like `operator/tests/local_up.rs`
/// builds the broker): next to the test executable's `deps/` directory.
fn operator_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target profile directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(["build", "-p", "operator", "--bin", "mqtt-operator"])
        .current_dir(e2e::bed::repo_root())
        .status()
        .expect("run cargo build -p operator");
    assert!(status.success(), "cargo build -p operator failed");
    dir.join("mqtt-operator")
}

/// `mqtt-operator run --leader-elect ...` as the chart runs it, as a real process.
fn spawn_operator(
    bed: &e2e::TestBed,
    binary: &std::path::Path,
    ns: &str,
    port: u16,
) -> e2e::process::ManagedProcess {
    let mut command = std::process::Command::new(binary);
    command
        .args([
            "run".to_string(),
            format!("--metrics-bind-address=127.0.0.1:{port}"),
            "--log-format=text".to_string(),
            "--leader-elect".to_string(),
            format!("--lease-name={LEASE_NAME}"),
            format!("--lease-namespace={ns}"),
            "--lease-duration-seconds=6".to_string(),
            format!("--watch-namespaces={ns}"),
        ])
        .env("KUBECONFIG", bed.kubeconfig_path())
        .env("POD_NAME", "op-process")
        .env("POD_NAMESPACE", ns)
        .env("RUST_LOG", "info");
    bed.spawn("mqtt-operator", command)
        .expect("spawn mqtt-operator")
}

async fn wait_exit(p: &e2e::process::ManagedProcess, timeout: Duration) -> String {
    wait::until("mqtt-operator to exit", timeout, || async {
        match p.exited() {
            Some(status) => Check::Done(status),
            None => Check::NotYet("running".into()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", p.log_tail(30)))
}

#[tokio::test]
async fn the_binary_releases_on_sigterm_and_exits_non_zero_when_the_lease_is_lost() {
    let Some(bed) = e2e::shared() else { return };
    let _serial = serial().await;
    let binary = operator_binary();
    let client = bed.client().await.expect("client");
    let ns = bed.namespace("process").await.expect("namespace");

    let p = spawn_operator(bed, &binary, &ns, free_port().port());
    wait_holder(&client, &ns, "op-process", Duration::from_secs(30)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(p.pid()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = wait_exit(&p, Duration::from_secs(20)).await;
    assert_eq!(status, "exit status: 0", "{}", p.log_tail(30));
    assert_eq!(holder(&client, &ns).await, None, "released on SIGTERM");

    let p = spawn_operator(bed, &binary, &ns, free_port().port());
    wait_holder(&client, &ns, "op-process", Duration::from_secs(30)).await;
    Api::<Lease>::namespaced(client.clone(), &ns)
        .patch(
            LEASE_NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "intruder",
                "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    k8s_openapi::jiff::Timestamp::now()
                ),
            }})),
        )
        .await
        .expect("steal the Lease");
    let status = wait_exit(&p, Duration::from_secs(20)).await;
    assert_ne!(
        status, "exit status: 0",
        "losing the Lease exits non-zero so the Deployment restarts the Pod"
    );
    assert!(
        p.log_tail(30).contains("lost leadership"),
        "{}",
        p.log_tail(30)
    );
}
