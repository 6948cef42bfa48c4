//! Pod volumes as the kubelet makes them for a container: a `configMap` volume becomes its
//! keys (or `items`) as files, an `emptyDir` an empty directory, both under the pod's state
//! directory; `berth container-init` binds them over each `volumeMount`'s path. Other volume
//! types are refused with a message saying so.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, Container, PodSpec, Volume, VolumeMount};

/// The kubelet's default mode for projected files (`defaultMode` 0644).
const FILE_MODE: u32 = 0o644;

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
        if v.config_map.is_none() && v.empty_dir.is_none() {
            return Err(format!(
                "volume {:?}: berth makes only configMap and emptyDir volumes",
                v.name
            ));
        }
        out.push((m, v));
    }
    Ok(out)
}

/// The files of a configMap volume, as (path relative to the volume, content): every key, or
/// only `items` at their paths. `data` is the ConfigMap's data, `None` if it does not exist.
pub fn config_map_files(
    source: &ConfigMapVolumeSource,
    data: Option<&BTreeMap<String, String>>,
) -> Result<Vec<(String, String)>, String> {
    let optional = source.optional == Some(true);
    let Some(data) = data else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(format!("configmap {:?} not found", source.name))
        };
    };
    let Some(items) = &source.items else {
        return Ok(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    };
    let mut files = Vec::new();
    for item in items {
        let Some(value) = data.get(&item.key) else {
            if optional {
                continue;
            }
            return Err(format!(
                "configmap references non-existent config key: {}",
                item.key
            ));
        };
        let inside = Path::new(&item.path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !inside || item.path.is_empty() {
            return Err(format!("invalid item path {:?}", item.path));
        }
        files.push((item.path.clone(), value.clone()));
    }
    Ok(files)
}

/// Replaces `dir` with a directory (0755) holding exactly `files` (0644), so a restarted
/// container sees the ConfigMap as it is now.
pub fn write_files(dir: &Path, files: &[(String, String)]) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    ensure_dir(dir)?;
    for (rel, content) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            ensure_dir(parent)?;
        }
        std::fs::write(&path, content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(FILE_MODE))?;
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
    use k8s_openapi::api::core::v1::KeyToPath;

    fn source(items: Option<&[(&str, &str)]>, optional: bool) -> ConfigMapVolumeSource {
        ConfigMapVolumeSource {
            name: "conf".into(),
            optional: optional.then_some(true),
            items: items.map(|i| {
                i.iter()
                    .map(|(key, path)| KeyToPath {
                        key: (*key).into(),
                        path: (*path).into(),
                        mode: None,
                    })
                    .collect()
            }),
            default_mode: None,
        }
    }

    fn check(
        source: ConfigMapVolumeSource,
        data: Option<&[(&str, &str)]>,
        expected: Result<&[(&str, &str)], &str>,
    ) {
        let data: Option<BTreeMap<String, String>> = data.map(|d| {
            d.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        });
        let got = config_map_files(&source, data.as_ref());
        let expected = expected
            .map(|f| {
                f.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<Vec<_>>()
            })
            .map_err(str::to_owned);
        assert_eq!(got, expected);
    }

    #[test]
    fn config_map_volumes_hold_keys_or_items() {
        let data: &[(&str, &str)] = &[("a.conf", "A"), ("b.conf", "B")];
        check(source(None, false), Some(data), Ok(data));
        check(
            source(Some(&[("b.conf", "sub/b")]), false),
            Some(data),
            Ok(&[("sub/b", "B")]),
        );
        check(
            source(None, false),
            None,
            Err("configmap \"conf\" not found"),
        );
        check(source(None, true), None, Ok(&[]));
        check(
            source(Some(&[("c", "c")]), false),
            Some(data),
            Err("configmap references non-existent config key: c"),
        );
        check(source(Some(&[("c", "c")]), true), Some(data), Ok(&[]));
        check(
            source(Some(&[("a.conf", "../x")]), false),
            Some(data),
            Err("invalid item path \"../x\""),
        );
        check(
            source(Some(&[("a.conf", "/x")]), false),
            Some(data),
            Err("invalid item path \"/x\""),
        );
    }

    #[test]
    fn written_volumes_replace_what_was_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path().join("volumes/conf");
        write_files(&vol, &[("old".into(), "x".into())]).expect("write");
        write_files(&vol, &[("sub/new".into(), "y".into())]).expect("write");
        assert!(!vol.join("old").exists());
        assert_eq!(
            std::fs::read_to_string(vol.join("sub/new")).expect("read"),
            "y"
        );
        let mode = std::fs::metadata(vol.join("sub/new"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
