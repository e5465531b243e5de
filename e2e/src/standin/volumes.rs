//! Pod volumes as host directories. ConfigMap, Secret and projected volumes become files in a
//! per-pod directory, read through the API and rewritten (atomically, only when changed) as the
//! objects change, as kubelet does; a PersistentVolumeClaim becomes a directory per claim that
//! outlives the pod (a recreated StatefulSet pod finds its data again); an emptyDir a per-pod
//! directory.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Secret, Volume};
use k8s_openapi::ByteString;
use kube::{Api, Client};

/// A volume could not be materialised.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A referenced, non-optional object or key does not exist (yet).
    #[error("volume {volume}: {what} not found")]
    Missing {
        /// The volume.
        volume: String,
        /// What is missing.
        what: String,
    },
    /// A volume type the stand-in does not emulate.
    #[error("volume {volume}: unsupported source (only configMap, secret, projected, persistentVolumeClaim, emptyDir)")]
    Unsupported {
        /// The volume.
        volume: String,
    },
    /// Reading an object failed.
    #[error("reading {what}: {source}")]
    Api {
        /// The object.
        what: String,
        /// The client error.
        source: Box<kube::Error>,
    },
    /// Writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// ConfigMaps and Secrets of the pod's namespace, by name, as read for one materialisation.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    /// ConfigMaps by name.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Secret>,
}

/// Where a volume lives on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// Files computed from objects, written under the directory.
    Files(PathBuf, BTreeMap<PathBuf, (Vec<u8>, u32)>),
    /// A plain directory (PVC, emptyDir).
    Dir(PathBuf),
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    out.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, ByteString(v))| (k.clone(), v.clone())),
    );
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    out.extend(
        s.data
            .iter()
            .flatten()
            .map(|(k, ByteString(v))| (k.clone(), v.clone())),
    );
    out
}

/// Adds `data` (selected by `items`, or every key) to `files`.
fn project(
    volume: &str,
    source: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    mode: u32,
    files: &mut BTreeMap<PathBuf, (Vec<u8>, u32)>,
) -> Result<(), VolumeError> {
    let missing = |what: String| VolumeError::Missing {
        volume: volume.to_string(),
        what,
    };
    let Some(data) = data else {
        return if optional {
            Ok(())
        } else {
            Err(missing(source.to_string()))
        };
    };
    match items {
        None => {
            for (k, v) in data {
                files.insert(PathBuf::from(k), (v, mode));
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        let m = item.mode.map_or(mode, |m| m as u32);
                        files.insert(PathBuf::from(&item.path), (v.clone(), m));
                    }
                    None if optional => {}
                    None => return Err(missing(format!("key {} of {source}", item.key))),
                }
            }
        }
    }
    Ok(())
}

/// Names of the ConfigMaps and Secrets `volumes` reference.
pub fn references(volumes: &[Volume]) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for v in volumes {
        if let Some(c) = &v.config_map {
            cms.push(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(s);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                cms.push(c.name.clone());
            }
            if let Some(s) = &p.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    (cms, secrets)
}

/// The host backing of `volume` for a pod whose own directory is `pod_dir`, with claims under
/// `claims_dir`. Pure.
pub fn backing(
    volume: &Volume,
    objects: &Objects,
    pod_dir: &Path,
    claims_dir: &Path,
) -> Result<Backing, VolumeError> {
    let name = volume.name.as_str();
    let dir = pod_dir.join("volumes").join(name);
    let mut files = BTreeMap::new();
    if let Some(c) = &volume.config_map {
        let mode = c.default_mode.unwrap_or(0o644) as u32;
        let data = objects.config_maps.get(&c.name).map(config_map_data);
        let what = format!("ConfigMap {}", c.name);
        project(
            name,
            &what,
            data,
            c.items.as_ref(),
            c.optional == Some(true),
            mode,
            &mut files,
        )?;
    } else if let Some(s) = &volume.secret {
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let secret = s.secret_name.clone().unwrap_or_default();
        let data = objects.secrets.get(&secret).map(secret_data);
        let what = format!("Secret {secret}");
        project(
            name,
            &what,
            data,
            s.items.as_ref(),
            s.optional == Some(true),
            mode,
            &mut files,
        )?;
    } else if let Some(p) = &volume.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for source in p.sources.iter().flatten() {
            if let Some(c) = &source.config_map {
                let data = objects.config_maps.get(&c.name).map(config_map_data);
                let what = format!("ConfigMap {}", c.name);
                project(
                    name,
                    &what,
                    data,
                    c.items.as_ref(),
                    c.optional == Some(true),
                    mode,
                    &mut files,
                )?;
            } else if let Some(s) = &source.secret {
                let data = objects.secrets.get(&s.name).map(secret_data);
                let what = format!("Secret {}", s.name);
                project(
                    name,
                    &what,
                    data,
                    s.items.as_ref(),
                    s.optional == Some(true),
                    mode,
                    &mut files,
                )?;
            } else {
                return Err(VolumeError::Unsupported {
                    volume: name.to_string(),
                });
            }
        }
    } else if let Some(claim) = &volume.persistent_volume_claim {
        return Ok(Backing::Dir(claims_dir.join(&claim.claim_name)));
    } else if volume.empty_dir.is_some() {
        return Ok(Backing::Dir(dir));
    } else {
        return Err(VolumeError::Unsupported {
            volume: name.to_string(),
        });
    }
    Ok(Backing::Files(dir, files))
}

/// Reads the ConfigMaps and Secrets `volumes` reference (absent ones are left out).
pub async fn fetch(client: &Client, ns: &str, volumes: &[Volume]) -> Result<Objects, VolumeError> {
    let (cms, secrets) = references(volumes);
    let mut objects = Objects::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in cms {
        let got = cm_api.get_opt(&name).await.map_err(|e| VolumeError::Api {
            what: format!("ConfigMap {ns}/{name}"),
            source: Box::new(e),
        })?;
        if let Some(cm) = got {
            objects.config_maps.insert(name, cm);
        }
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in secrets {
        let got = secret_api
            .get_opt(&name)
            .await
            .map_err(|e| VolumeError::Api {
                what: format!("Secret {ns}/{name}"),
                source: Box::new(e),
            })?;
        if let Some(s) = got {
            objects.secrets.insert(name, s);
        }
    }
    Ok(objects)
}

/// Creates the backing directory and writes the files whose content or mode changed, each
/// through a temporary file and a rename, so a reader never sees half a file. Returns how many
/// files were written.
pub fn write(backing: &Backing) -> Result<usize, VolumeError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| VolumeError::Io {
            action,
            path,
            source,
        }
    };
    let (dir, files) = match backing {
        Backing::Dir(dir) => {
            fs::create_dir_all(dir).map_err(io("creating", dir))?;
            return Ok(0);
        }
        Backing::Files(dir, files) => (dir, files),
    };
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let mut written = 0;
    for (rel, (bytes, mode)) in files {
        let path = dir.join(rel);
        let same = fs::read(&path).is_ok_and(|old| &old == bytes)
            && fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o777 == *mode);
        if same {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        fs::create_dir_all(parent).map_err(io("creating", parent))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = parent.join(format!(".{name}.standin-tmp"));
        fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(*mode)).map_err(io("chmod", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("renaming into", &path))?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOLUMES: &str = r#"
- name: config
  projected:
    defaultMode: 288
    sources:
      - configMap: {name: qs-config, items: [{key: broker.json, path: broker.json}, {key: acl.bin, path: acl.bin}]}
      - secret: {name: qs-server-tls, items: [{key: tls.crt, path: tls/server.crt}]}
- name: data
  persistentVolumeClaim: {claimName: data-qs-core-0}
- name: scratch
  emptyDir: {}
"#;

    fn objects() -> Objects {
        let cm: ConfigMap = serde_yaml::from_str(
            "metadata: {name: qs-config}\ndata: {broker.json: '{}'}\nbinaryData: {acl.bin: AAEC}\n",
        )
        .unwrap();
        let secret: Secret =
            serde_yaml::from_str("metadata: {name: qs-server-tls}\ndata: {tls.crt: Q0VSVA==}\n")
                .unwrap();
        Objects {
            config_maps: BTreeMap::from([("qs-config".into(), cm)]),
            secrets: BTreeMap::from([("qs-server-tls".into(), secret)]),
        }
    }

    #[test]
    fn projected_items_become_files_with_the_default_mode_and_claims_outlive_the_pod() {
        let volumes: Vec<Volume> = serde_yaml::from_str(VOLUMES).unwrap();
        let (pod, claims) = (Path::new("/p"), Path::new("/claims"));
        let Backing::Files(dir, files) = backing(&volumes[0], &objects(), pod, claims).unwrap()
        else {
            panic!("files expected");
        };
        assert_eq!(dir, Path::new("/p/volumes/config"));
        assert_eq!(files[Path::new("broker.json")], (b"{}".to_vec(), 0o440));
        assert_eq!(files[Path::new("acl.bin")], (vec![0, 1, 2], 0o440));
        assert_eq!(
            files[Path::new("tls/server.crt")],
            (b"CERT".to_vec(), 0o440)
        );
        assert_eq!(
            backing(&volumes[1], &objects(), pod, claims).unwrap(),
            Backing::Dir("/claims/data-qs-core-0".into())
        );
        assert_eq!(
            backing(&volumes[2], &objects(), pod, claims).unwrap(),
            Backing::Dir("/p/volumes/scratch".into())
        );
        assert_eq!(
            references(&volumes),
            (
                vec!["qs-config".to_string()],
                vec!["qs-server-tls".to_string()]
            )
        );
    }

    #[test]
    fn a_missing_object_or_key_is_reported_unless_optional() {
        let volumes: Vec<Volume> = serde_yaml::from_str(VOLUMES).unwrap();
        let mut objs = objects();
        objs.secrets.clear();
        let err = backing(&volumes[0], &objs, Path::new("/p"), Path::new("/c")).unwrap_err();
        assert!(
            err.to_string().contains("Secret qs-server-tls not found"),
            "{err}"
        );
        let optional = VOLUMES.replace(
            "{name: qs-server-tls,",
            "{name: qs-server-tls, optional: true,",
        );
        let volumes: Vec<Volume> = serde_yaml::from_str(&optional).unwrap();
        assert!(backing(&volumes[0], &objs, Path::new("/p"), Path::new("/c")).is_ok());
    }

    #[test]
    fn write_rewrites_only_changed_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v");
        let mut files = BTreeMap::from([
            (PathBuf::from("a"), (b"1".to_vec(), 0o440)),
            (PathBuf::from("tls/b"), (b"2".to_vec(), 0o440)),
        ]);
        assert_eq!(
            write(&Backing::Files(dir.clone(), files.clone())).unwrap(),
            2
        );
        assert_eq!(
            write(&Backing::Files(dir.clone(), files.clone())).unwrap(),
            0
        );
        files.insert(PathBuf::from("a"), (b"3".to_vec(), 0o440));
        assert_eq!(write(&Backing::Files(dir.clone(), files)).unwrap(), 1);
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"3");
        assert_eq!(fs::read(dir.join("tls/b")).unwrap(), b"2");
    }
}
