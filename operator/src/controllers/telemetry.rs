//! Operator metrics (names from `contract::metrics::operator`) and the `/healthz` + `/metrics`
//! HTTP server.

use std::sync::Arc;
use std::time::Instant;

use axum::routing::get;
use axum::Router;
use contract::metrics::operator as names;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The operator's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    leader: IntGauge,
    certificates: IntCounterVec,
    not_after: GaugeVec,
    renewal: GaugeVec,
}

/// Which certificate a `mqtt_operator_certificate_*_timestamp_seconds` series is about.
#[derive(Debug, Clone, Copy)]
pub struct CertificateKey<'a> {
    /// Namespace of the MqttCluster.
    pub namespace: &'a str,
    /// The MqttCluster.
    pub cluster: &'a str,
    /// Kind of certificate: `device`, `server`, `cluster-ca`, `clients-ca`.
    pub certificate: &'a str,
    /// The object it belongs to (the DeviceIdentity's name for a device).
    pub name: &'a str,
}

impl CertificateKey<'_> {
    fn labels(&self) -> [&str; 4] {
        [self.namespace, self.cluster, self.certificate, self.name]
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(names::RECONCILE.name, names::RECONCILE.help),
            names::RECONCILE.labels,
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(names::RECONCILE_ERRORS.name, names::RECONCILE_ERRORS.help),
            names::RECONCILE_ERRORS.labels,
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                names::RECONCILE_DURATION.name,
                names::RECONCILE_DURATION.help,
            )
            .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            names::RECONCILE_DURATION.labels,
        )
        .expect("valid metric");
        let leader = IntGauge::new(names::LEADER.name, names::LEADER.help).expect("valid metric");
        let certificates = IntCounterVec::new(
            Opts::new(names::CERTIFICATES.name, names::CERTIFICATES.help),
            names::CERTIFICATES.labels,
        )
        .expect("valid metric");
        let not_after = GaugeVec::new(
            Opts::new(names::CERT_NOT_AFTER.name, names::CERT_NOT_AFTER.help),
            names::CERT_NOT_AFTER.labels,
        )
        .expect("valid metric");
        let renewal = GaugeVec::new(
            Opts::new(names::CERT_RENEWAL.name, names::CERT_RENEWAL.help),
            names::CERT_RENEWAL.labels,
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(leader.clone()),
            Box::new(certificates.clone()),
            Box::new(not_after.clone()),
            Box::new(renewal.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            certificates,
            not_after,
            renewal,
        }
    }

    /// Counts a certificate operation: `issued`, `rotated` or `revoked`.
    pub fn certificate(&self, operation: &'static str) {
        self.certificates.with_label_values(&[operation]).inc();
    }

    /// Publishes when the certificate `key` expires and when the operator renews it (Unix
    /// seconds), for the expiry and renewal-overdue alerts.
    pub fn certificate_times(&self, key: CertificateKey<'_>, not_after: f64, renewal: Option<f64>) {
        self.not_after
            .with_label_values(&key.labels())
            .set(not_after);
        match renewal {
            Some(r) => self.renewal.with_label_values(&key.labels()).set(r),
            None => {
                let _ = self.renewal.remove_label_values(&key.labels());
            }
        }
    }

    /// Drops the series of a certificate no longer in use (identity deleted, revoked, suspended).
    pub fn forget_certificate(&self, key: CertificateKey<'_>) {
        let _ = self.not_after.remove_label_values(&key.labels());
        let _ = self.renewal.remove_label_values(&key.labels());
    }

    /// Sets `mqtt_operator_leader`: whether this replica leads (runs the controllers).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts a reconcile of `kind` and times it until the guard drops.
    pub fn reconcile(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.with_label_values(&[kind]).inc();
        ReconcileTimer {
            metrics: self,
            kind,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn error(&self, kind: &'static str, category: &'static str) {
        self.errors.with_label_values(&[kind, category]).inc();
    }

    /// The Prometheus text exposition. Every family of `contract::metrics::operator` appears,
    /// those without a series yet (no certificate issued, no propagation measured) as HELP and
    /// TYPE lines only, so scrapes and rule checks see the name before its first event.
    pub fn render(&self) -> String {
        let mut out = TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default();
        for m in names::ALL {
            if !out.contains(&format!("# TYPE {} ", m.name)) {
                out += &format!(
                    "# HELP {n} {h}\n# TYPE {n} {k}\n",
                    n = m.name,
                    h = m.help,
                    k = m.kind
                );
            }
        }
        out
    }
}

/// Observes the reconcile duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .with_label_values(&[self.kind])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// Serves `/healthz` and `/metrics` until the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_use_the_contract_names() {
        let m = Metrics::new();
        drop(m.reconcile("MqttCluster"));
        m.error("MqttCluster", "apply");
        assert!(m.render().contains("mqtt_operator_leader 0"));
        m.set_leader(true);
        let text = m.render();
        assert!(text.contains("mqtt_operator_leader 1"));
        assert!(text.contains("mqtt_operator_reconcile_total{kind=\"MqttCluster\"} 1"));
        assert!(text.contains(
            "mqtt_operator_reconcile_errors_total{category=\"apply\",kind=\"MqttCluster\"} 1"
        ));
        assert!(
            text.contains("mqtt_operator_reconcile_duration_seconds_count{kind=\"MqttCluster\"} 1")
        );
        for m in names::ALL {
            assert!(
                text.contains(&format!("# TYPE {} {}\n", m.name, m.kind)),
                "{} missing in\n{text}",
                m.name
            );
        }
    }
}
