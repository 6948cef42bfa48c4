//! Pod volumes as the kubelet makes them for a container: `configMap`, `secret`,
//! `downwardAPI` and `projected` volumes become files (keys, `items`, pod fields, a
//! ServiceAccount token), an `emptyDir` an empty directory, all under the pod's state
//! directory; `berth container-init` binds them over each `volumeMount`'s path. Other volume
//! types are refused with a message saying so. The objects are read by the pod worker; what
//! is here is pure.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, PodSpec, Volume, VolumeMount,
};

/// The kubelet's default mode for projected files (`defaultMode` 0644).
pub const FILE_MODE: i32 = 0o644;

/// One file of a volume: its path inside the volume, content and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: i32,
}

/// A container's volume mounts with the pod volume each names, in mount order. Errors (as
/// the kubelet words them where it has a word) for a mount naming no volume and for volume
/// types berth cannot make.
pub fn needed<'a>(
    pod: &'a PodSpec,
    c: &'a Container,
) -> Result<Vec<(&'a VolumeMount, &'a Volume)>, String> {
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes.iter().find(|v| v.name == m.name).ok_or_else(|| {
            format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, c.name
            )
        })?;
        let made = v.config_map.is_some()
            || v.empty_dir.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some();
        if !made {
            return Err(format!(
                "volume {:?}: berth makes only configMap, secret, downwardAPI, projected and emptyDir volumes",
                v.name
            ));
        }
        out.push((m, v));
    }
    Ok(out)
}

/// What a `configMap` or `secret` source refers to, for the kubelet's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyed {
    ConfigMap,
    Secret,
}

/// The files of a configMap or secret source: every key, or only `items` at their paths.
/// `data` is the object's data, `None` if it does not exist.
pub fn keyed_files(
    what: Keyed,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    mode: i32,
    data: Option<&BTreeMap<String, Vec<u8>>>,
) -> Result<Vec<File>, String> {
    let Some(data) = data else {
        return match (optional, what) {
            (true, _) => Ok(Vec::new()),
            (false, Keyed::ConfigMap) => Err(format!("configmap {name:?} not found")),
            (false, Keyed::Secret) => Err(format!("secret {name:?} not found")),
        };
    };
    let Some(items) = items else {
        return Ok(data
            .iter()
            .map(|(k, v)| File {
                path: k.clone(),
                content: v.clone(),
                mode,
            })
            .collect());
    };
    let mut files = Vec::new();
    for item in items {
        let Some(value) = data.get(&item.key) else {
            if optional {
                continue;
            }
            return Err(match what {
                Keyed::ConfigMap => {
                    format!("configmap references non-existent config key: {}", item.key)
                }
                Keyed::Secret => format!("references non-existent secret key: {}", item.key),
            });
        };
        files.push(File {
            path: checked_path(&item.path)?,
            content: value.clone(),
            mode: item.mode.unwrap_or(mode),
        });
    }
    Ok(files)
}

/// The files of a downwardAPI source: each item's pod field (`metadata.name`, `namespace`,
/// `uid`, `labels`, `annotations` or one of them), written as the kubelet writes them.
pub fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
) -> Result<Vec<File>, String> {
    let meta = &pod.metadata;
    let map = |m: &Option<BTreeMap<String, String>>| -> String {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect()
    };
    let mut files = Vec::new();
    for item in items {
        let Some(field) = &item.field_ref else {
            return Err(format!(
                "downwardAPI item {:?}: berth fills only fieldRef items",
                item.path
            ));
        };
        let path = field.field_path.as_str();
        let one = |prefix: &str, m: &Option<BTreeMap<String, String>>| {
            let key = path
                .strip_prefix(prefix)?
                .strip_prefix("['")?
                .strip_suffix("']")?;
            Some(m.as_ref()?.get(key).cloned().unwrap_or_default())
        };
        let value = match path {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "metadata.labels" => map(&meta.labels),
            "metadata.annotations" => map(&meta.annotations),
            _ => one("metadata.labels", &meta.labels)
                .or_else(|| one("metadata.annotations", &meta.annotations))
                .ok_or_else(|| format!("unsupported downwardAPI fieldPath {path:?}"))?,
        };
        files.push(File {
            path: checked_path(&item.path)?,
            content: value.into_bytes(),
            mode: item.mode.unwrap_or(mode),
        });
    }
    Ok(files)
}

/// A relative path of plain components, as volume items must have.
fn checked_path(path: &str) -> Result<String, String> {
    let inside = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !inside || path.is_empty() {
        return Err(format!("invalid item path {path:?}"));
    }
    Ok(path.to_owned())
}

/// Replaces `dir` with a directory (0755) holding exactly `files`, so a restarted container
/// sees the objects as they are now.
pub fn write_files(dir: &Path, files: &[File]) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    ensure_dir(dir)?;
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            ensure_dir(parent)?;
        }
        std::fs::write(&path, &f.content)?;
        let mode = u32::try_from(f.mode).unwrap_or(0o644) & 0o7777;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Creates `dir` (and its parents) if missing, world-readable as a container expects it
/// (the agent's own umask is 077).
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(i: &[(&str, &str)]) -> Vec<KeyToPath> {
        i.iter()
            .map(|(key, path)| KeyToPath {
                key: (*key).into(),
                path: (*path).into(),
                mode: None,
            })
            .collect()
    }

    fn check(
        what: Keyed,
        items: Option<&[KeyToPath]>,
        optional: bool,
        data: Option<&[(&str, &str)]>,
        expected: Result<&[(&str, &str)], &str>,
    ) {
        let data: Option<BTreeMap<String, Vec<u8>>> = data.map(|d| {
            d.iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect()
        });
        let got = keyed_files(what, "conf", items, optional, FILE_MODE, data.as_ref());
        let expected = expected
            .map(|f| {
                f.iter()
                    .map(|(k, v)| File {
                        path: (*k).to_owned(),
                        content: v.as_bytes().to_vec(),
                        mode: FILE_MODE,
                    })
                    .collect::<Vec<_>>()
            })
            .map_err(str::to_owned);
        assert_eq!(got, expected);
    }

    #[test]
    fn config_map_and_secret_volumes_hold_keys_or_items() {
        use Keyed::{ConfigMap, Secret};
        let data: &[(&str, &str)] = &[("a.conf", "A"), ("b.conf", "B")];
        check(ConfigMap, None, false, Some(data), Ok(data));
        let b = items(&[("b.conf", "sub/b")]);
        check(
            ConfigMap,
            Some(&b),
            false,
            Some(data),
            Ok(&[("sub/b", "B")]),
        );
        check(
            ConfigMap,
            None,
            false,
            None,
            Err("configmap \"conf\" not found"),
        );
        check(Secret, None, false, None, Err("secret \"conf\" not found"));
        check(ConfigMap, None, true, None, Ok(&[]));
        let c = items(&[("c", "c")]);
        check(
            ConfigMap,
            Some(&c),
            false,
            Some(data),
            Err("configmap references non-existent config key: c"),
        );
        check(
            Secret,
            Some(&c),
            false,
            Some(data),
            Err("references non-existent secret key: c"),
        );
        check(ConfigMap, Some(&c), true, Some(data), Ok(&[]));
        for bad in ["../x", "/x", ""] {
            let up = items(&[("a.conf", bad)]);
            let err = format!("invalid item path {bad:?}");
            check(ConfigMap, Some(&up), false, Some(data), Err(&err));
        }
    }

    #[test]
    fn downward_api_files_hold_the_pods_fields() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1",
                         "labels": {"app": "web", "tier": "front"}},
        }))
        .expect("pod");
        let item = |path: &str, field: &str| -> DownwardAPIVolumeFile {
            serde_json::from_value(
                serde_json::json!({"path": path, "fieldRef": {"fieldPath": field}}),
            )
            .expect("item")
        };
        let files = downward_files(
            &pod,
            &[
                item("namespace", "metadata.namespace"),
                item("labels", "metadata.labels"),
                item("app", "metadata.labels['app']"),
            ],
            FILE_MODE,
        )
        .expect("files");
        let text: Vec<String> = files
            .iter()
            .map(|f| String::from_utf8_lossy(&f.content).into_owned())
            .collect();
        assert_eq!(text, ["prod", "app=\"web\"\ntier=\"front\"\n", "web"]);
        assert!(downward_files(&pod, &[item("x", "status.podIP")], FILE_MODE).is_err());
    }

    #[test]
    fn written_volumes_replace_what_was_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path().join("volumes/conf");
        let file = |path: &str, mode| File {
            path: path.into(),
            content: b"x".to_vec(),
            mode,
        };
        write_files(&vol, &[file("old", FILE_MODE)]).expect("write");
        write_files(&vol, &[file("sub/new", FILE_MODE), file("key", 0o400)]).expect("write");
        assert!(!vol.join("old").exists());
        assert_eq!(
            std::fs::read_to_string(vol.join("sub/new")).expect("read"),
            "x"
        );
        let mode = |p: &str| {
            std::fs::metadata(vol.join(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("sub/new"), 0o644);
        assert_eq!(mode("key"), 0o400);
    }
}
