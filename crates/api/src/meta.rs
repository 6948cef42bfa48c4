//! ObjectMeta validation shared by every kind, with kube-apiserver's field paths and messages
//! (`metadata.name: Required value: name or generateName is required`, `field is immutable`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::error::{BadValue, FieldError, FieldErrorKind, FieldErrors, go_quote};
use crate::names;

/// Detail text upstream uses for every immutable field.
pub const FIELD_IMMUTABLE: &str = "field is immutable";

/// Largest total size (keys plus values) of an object's annotations.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Finalizers without a `/` prefix that core kinds accept.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Builds an error whose bad value upstream prints with Go's `%#v` (slices, structs, times):
/// `BadValue` can only quote strings, so the rendered value rides in front of the detail,
/// which yields the same `Kind: value: detail` text.
pub(crate) fn raw_value_error(
    kind: FieldErrorKind,
    path: impl Into<String>,
    raw: &str,
    detail: &str,
) -> FieldError {
    let detail = if detail.is_empty() {
        raw.to_owned()
    } else {
        format!("{raw}: {detail}")
    };
    FieldError::new(kind, path, BadValue::None, detail)
}

/// Go's `%#v` of a `[]string`; a missing list is nil in Go, hence `[]string(nil)`.
pub(crate) fn go_string_slice(items: &[String]) -> String {
    if items.is_empty() {
        return "[]string(nil)".to_owned();
    }
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// Go's `time.Time.String()`, which is what upstream shows for a changed timestamp.
fn go_time(t: &Option<Time>) -> String {
    match t {
        Some(t) => {
            let ts = t.0;
            let secs = ts.strftime("%Y-%m-%d %H:%M:%S").to_string();
            let nanos = ts.subsec_nanosecond();
            if nanos == 0 {
                format!("{secs} +0000 UTC")
            } else {
                let frac = format!("{nanos:09}");
                format!("{secs}.{} +0000 UTC", frac.trim_end_matches('0'))
            }
        }
        None => "0001-01-01 00:00:00 +0000 UTC".to_owned(),
    }
}

/// Generated names get a random suffix, so a trailing dash in the prefix is fine.
fn mask_trailing_dash(s: &str) -> String {
    if s.len() > 1 && s.ends_with('-') {
        format!("{}a", &s[..s.len() - 1])
    } else {
        s.to_owned()
    }
}

fn opt_str(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

fn validate_annotations(annotations: &BTreeMap<String, String>, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        // Annotation keys are qualified names except that case does not matter.
        for msg in names::is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k.as_str(), msg));
        }
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::new(
            FieldErrorKind::TooLong,
            path,
            BadValue::None,
            format!("must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
        ));
    }
    errs
}

fn validate_finalizers(finalizers: &[String], path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for f in finalizers {
        let msgs = names::is_qualified_name(f);
        let ok = msgs.is_empty();
        errs.extend(
            msgs.into_iter()
                .map(|m| FieldError::invalid(path, f.as_str(), m)),
        );
        if ok && !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()) {
            errs.push(FieldError::invalid(
                path,
                f.as_str(),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    if finalizers.iter().any(|f| f == "orphan")
        && finalizers.iter().any(|f| f == "foregroundDeletion")
    {
        errs.push(raw_value_error(
            FieldErrorKind::Invalid,
            path,
            &go_string_slice(finalizers),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// Checks that apply both on create and on update.
fn validate_common(meta: &ObjectMeta) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Some(g) = meta.generation
        && g < 0
    {
        errs.push(FieldError::invalid(
            "metadata.generation",
            g,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(labels) = &meta.labels {
        errs.extend(names::validate_labels(labels, "metadata.labels"));
    }
    if let Some(annotations) = &meta.annotations {
        errs.extend(validate_annotations(annotations, "metadata.annotations"));
    }
    for r in meta.owner_references.iter().flatten() {
        // Upstream names these fields without the list index.
        let version = r.api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences.apiVersion",
                r.api_version.as_str(),
                "version must not be empty",
            ));
        }
        if r.kind.is_empty() {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences.kind",
                "",
                "must not be empty",
            ));
        }
        if r.name.is_empty() {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences.name",
                "",
                "must not be empty",
            ));
        }
        if r.uid.is_empty() {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences.uid",
                "",
                "must not be empty",
            ));
        }
    }
    if let Some(f) = &meta.finalizers {
        errs.extend(validate_finalizers(f, "metadata.finalizers"));
    }
    errs
}

/// Validates metadata on create. `name_check` is the kind's name rule (for example
/// [`names::is_dns1035_label`] for Services); a `generateName` prefix is checked with it too.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    name_check: fn(&str) -> Vec<String>,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let name = opt_str(&meta.name);
    let generate_name = opt_str(&meta.generate_name);
    if !generate_name.is_empty() {
        for msg in name_check(&mask_trailing_dash(generate_name)) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                msg,
            ));
        }
    }
    if name.is_empty() {
        // The server fills the name from generateName before it validates again.
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for msg in name_check(name) {
            errs.push(FieldError::invalid("metadata.name", name, msg));
        }
    }
    let namespace = opt_str(&meta.namespace);
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in names::is_dns1123_label(namespace) {
                errs.push(FieldError::invalid("metadata.namespace", namespace, msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    errs.extend(validate_common(meta));
    errs
}

/// Validates metadata on update: identity and creation fields may not change; labels,
/// annotations and finalizers of the new object must still be valid.
///
/// `resourceVersion` presence is left to the storage layer, which fills it for
/// unconditional updates before this runs.
pub fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if old.deletion_timestamp.is_some() {
        let old_f = old.finalizers.as_deref().unwrap_or_default();
        let mut extra: Vec<String> = new
            .finalizers
            .iter()
            .flatten()
            .filter(|f| !old_f.contains(f))
            .cloned()
            .collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    go_string_slice(&extra)
                ),
            ));
        }
    }
    let (new_gen, old_gen) = (new.generation.unwrap_or(0), old.generation.unwrap_or(0));
    if new_gen < old_gen {
        errs.push(FieldError::invalid(
            "metadata.generation",
            new_gen,
            "must not be decremented",
        ));
    }
    for (path, n, o) in [
        ("metadata.name", &new.name, &old.name),
        ("metadata.namespace", &new.namespace, &old.namespace),
        ("metadata.uid", &new.uid, &old.uid),
    ] {
        if opt_str(n) != opt_str(o) {
            errs.push(FieldError::invalid(path, opt_str(n), FIELD_IMMUTABLE));
        }
    }
    if new.creation_timestamp != old.creation_timestamp {
        errs.push(raw_value_error(
            FieldErrorKind::Invalid,
            "metadata.creationTimestamp",
            &go_time(&new.creation_timestamp),
            FIELD_IMMUTABLE,
        ));
    }
    if new.deletion_timestamp != old.deletion_timestamp {
        let raw = match &new.deletion_timestamp {
            Some(_) => go_time(&new.deletion_timestamp),
            None => go_quote("null"),
        };
        errs.push(raw_value_error(
            FieldErrorKind::Invalid,
            "metadata.deletionTimestamp",
            &raw,
            FIELD_IMMUTABLE,
        ));
    }
    if new.deletion_grace_period_seconds != old.deletion_grace_period_seconds {
        let path = "metadata.deletionGracePeriodSeconds";
        errs.push(match new.deletion_grace_period_seconds {
            Some(v) => FieldError::invalid(path, v, FIELD_IMMUTABLE),
            None => FieldError::invalid(path, "null", FIELD_IMMUTABLE),
        });
    }
    errs.extend(validate_common(new));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(json: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json).expect("test metadata parses")
    }

    fn strings(errs: &FieldErrors) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn create_rules() {
        let cases: Vec<(serde_json::Value, bool, Vec<&str>)> = vec![
            (
                serde_json::json!({"name": "ok", "namespace": "default"}),
                true,
                vec![],
            ),
            (
                serde_json::json!({"namespace": "default"}),
                true,
                vec!["metadata.name: Required value: name or generateName is required"],
            ),
            (
                serde_json::json!({"generateName": "web-", "namespace": "default"}),
                true,
                vec![],
            ),
            (
                serde_json::json!({"name": "ok"}),
                true,
                vec!["metadata.namespace: Required value"],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "default"}),
                false,
                vec!["metadata.namespace: Forbidden: not allowed on this type"],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "default", "annotations": {"a b": "x"}}),
                true,
                vec![
                    "metadata.annotations: Invalid value: \"a b\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                ],
            ),
            (
                serde_json::json!({"name": "ok", "namespace": "default", "finalizers": ["custom"]}),
                true,
                vec![
                    "metadata.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified",
                ],
            ),
        ];
        for (m, namespaced, want) in cases {
            let got = strings(&validate_object_meta(
                &meta(m.clone()),
                namespaced,
                names::is_dns1035_label,
            ));
            assert_eq!(got, want, "metadata {m}");
        }
    }

    #[test]
    fn update_rules() {
        let old = meta(serde_json::json!({
            "name": "a", "namespace": "ns", "uid": "u1", "creationTimestamp": "2024-01-02T03:04:05Z"
        }));
        let same = old.clone();
        assert!(validate_object_meta_update(&same, &old).is_empty());

        let changed = meta(serde_json::json!({
            "name": "b", "namespace": "ns", "uid": "u2", "creationTimestamp": "2024-05-06T07:08:09Z"
        }));
        assert_eq!(
            strings(&validate_object_meta_update(&changed, &old)),
            vec![
                "metadata.name: Invalid value: \"b\": field is immutable",
                "metadata.uid: Invalid value: \"u2\": field is immutable",
                "metadata.creationTimestamp: Invalid value: 2024-05-06 07:08:09 +0000 UTC: field is immutable",
            ]
        );
    }
}
