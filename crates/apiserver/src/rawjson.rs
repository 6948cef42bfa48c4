//! Stored objects served as they are kept: the object's JSON with its resourceVersion spliced
//! into `metadata` without decoding it (the version is not stored inside the object). Finding
//! the top-level `metadata` object needs only a scan of strings and brackets; serde_json has
//! no splice-in-place, so this small scanner is written here.

/// Appends the stored object `json` to `out` with `"resourceVersion":"<revision>"` as the
/// first member of its top-level `metadata` object. Returns false, appending nothing, when
/// `json` is not an object with a `metadata` object.
pub fn with_resource_version(json: &[u8], revision: i64, out: &mut Vec<u8>) -> bool {
    let Some(open) = metadata_open(json) else {
        return false;
    };
    let (head, tail) = json.split_at(open);
    out.extend_from_slice(head);
    out.extend_from_slice(format!(r#""resourceVersion":"{revision}""#).as_bytes());
    if tail.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(tail);
    true
}

/// The offset just after the `{` that opens the top-level `"metadata"` member's value.
fn metadata_open(json: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    // The last string closed at depth 1: a member name if a `:` follows.
    let mut last: Option<(usize, usize)> = None;
    let mut key_is_metadata = false;
    while let Some(&b) = json.get(i) {
        match b {
            b'"' => {
                let start = i + 1;
                i += 1;
                loop {
                    match json.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                // A member name, or the value of the member before (then not an object).
                key_is_metadata = false;
                last = (depth == 1).then_some((start, i));
            }
            b':' if depth == 1 => {
                key_is_metadata = last.and_then(|(s, e)| json.get(s..e)) == Some(b"metadata");
                last = None;
            }
            b'{' | b'[' => {
                if depth == 1 && b == b'{' && key_is_metadata {
                    return Some(i + 1);
                }
                if depth == 0 && b != b'{' {
                    return None;
                }
                depth += 1;
                key_is_metadata = false;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return None;
                }
            }
            b',' => {
                key_is_metadata = false;
                last = None;
            }
            b if b.is_ascii_whitespace() => {}
            _ => {
                // A scalar at depth 1 after "metadata": (null, a number) is not an object.
                if depth == 1 {
                    key_is_metadata = false;
                }
                if depth == 0 {
                    return None;
                }
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn splice(v: &Value, revision: i64) -> Option<Value> {
        let mut out = Vec::new();
        if !with_resource_version(v.to_string().as_bytes(), revision, &mut out) {
            assert!(out.is_empty());
            return None;
        }
        Some(serde_json::from_slice(&out).expect("still JSON"))
    }

    #[test]
    fn the_version_goes_into_the_top_level_metadata() {
        let v = json!({
            "apiVersion": "apps/v1", "data": {"spec": {"template": {"metadata": {"x": 1}}}},
            "kind": "ControllerRevision", "metadata": {"name": "a", "note": "\"metadata\":{"},
        });
        let got = splice(&v, 42).expect("spliced");
        assert_eq!(got["metadata"]["resourceVersion"], "42");
        assert_eq!(got["metadata"]["name"], "a");
        assert_eq!(got["data"]["spec"]["template"]["metadata"], json!({"x": 1}));
        assert_eq!(
            splice(&json!({"metadata": {}}), 7),
            Some(json!({"metadata": {"resourceVersion": "7"}}))
        );
        for no in [
            json!({"kind": "X"}),
            json!({"metadata": null}),
            json!({"metadata": [1]}),
            json!([{"metadata": {}}]),
            json!("metadata"),
        ] {
            assert_eq!(splice(&no, 1), None, "{no}");
        }
    }

    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[\"\\\\{}:,a-z ]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![Just("metadata".to_owned()), "[a-z\"]{1,8}"],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn splicing_equals_setting_the_field(v in values(), revision in any::<i64>()) {
            let expected = match &v {
                Value::Object(m) if m.get("metadata").is_some_and(Value::is_object) => {
                    let mut e = v.clone();
                    e["metadata"]["resourceVersion"] = json!(revision.to_string());
                    Some(e)
                }
                _ => None,
            };
            prop_assert_eq!(splice(&v, revision), expected);
        }

        #[test]
        fn any_bytes_are_answered_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            let _ = with_resource_version(&bytes, 1, &mut out);
        }
    }
}
