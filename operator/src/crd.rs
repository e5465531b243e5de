//! CRD manifests generated from the types in `crds` (`mqtt-operator crd`, `crds/generated/`).

/// The generated file name and YAML of each CRD, in a fixed order.
pub fn files() -> Vec<(String, String)> {
    crds::all_crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            let yaml = serde_yaml::to_string(&crd).expect("a CRD always serializes to YAML");
            (name, yaml)
        })
        .collect()
}

/// All CRDs as one multi-document YAML stream.
pub fn all_yaml() -> String {
    files()
        .into_iter()
        .map(|(_, y)| format!("---\n{y}"))
        .collect()
}
