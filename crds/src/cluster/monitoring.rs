//! MqttCluster monitoring options: the generated ServiceMonitor, PrometheusRule (and its
//! threshold overrides) and Grafana dashboard.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::yes;

/// Generated monitoring objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A ServiceMonitor (monitoring.coreos.com/v1) scraping the broker metrics.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
    /// A PrometheusRule with alerts derived from this cluster's limits.
    #[serde(default)]
    pub prometheus_rule: PrometheusRuleSpec,
    /// A Grafana dashboard in a ConfigMap labelled `grafana_dashboard: "1"`.
    #[serde(default)]
    pub dashboard: DashboardSpec,
}

fn default_scrape_interval() -> String {
    "30s".to_string()
}

/// ServiceMonitor options.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create the ServiceMonitor (when the CRD exists in the cluster).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Scrape interval (e.g. `30s`).
    #[serde(default = "default_scrape_interval")]
    pub interval: String,
    /// Extra labels, e.g. the one your Prometheus selects ServiceMonitors by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_scrape_interval(),
            labels: BTreeMap::new(),
        }
    }
}

/// PrometheusRule options.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRuleSpec {
    /// Create the PrometheusRule (when the CRD exists in the cluster).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Extra labels, e.g. the one your Prometheus selects rules by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Overrides of derived alert thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<AlertOverrides>,
}

impl Default for PrometheusRuleSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            labels: BTreeMap::new(),
            overrides: None,
        }
    }
}

/// Overrides of alert thresholds. Unset fields use values derived from the spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertOverrides {
    /// Warn when connections exceed this percentage of capacity (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_warning_percent: Option<i32>,
    /// Page when connections exceed this percentage of capacity (default 95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_critical_percent: Option<i32>,
    /// Authentication failures per second that count as a spike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_failures_per_second: Option<f64>,
    /// ACL denies per second that count as a spike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_denies_per_second: Option<f64>,
    /// Percentage of `maxInflight` / `maxQueuedMessages` that counts as a deep queue
    /// (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth_percent: Option<i32>,
    /// Alert when a certificate expires within this many days even if not yet due (default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expiry_days: Option<i32>,
    /// How long a bridge may be disconnected before alerting (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_down_for: Option<String>,
    /// Retained messages gained per hour that count as runaway growth (default 100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_growth_per_hour: Option<i64>,
}

/// Grafana dashboard options.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardSpec {
    /// Create the dashboard ConfigMap.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for DashboardSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}
