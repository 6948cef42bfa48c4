//! Stored objects served as they are kept: the object's JSON with its resourceVersion spliced
//! into `metadata` without decoding it (the version is not stored inside the object). Finding
//! the top-level `metadata` object needs only a scan of strings and brackets; serde_json has
//! no splice-in-place, so this small scanner is written here.

/// Appends the stored object `json` to `out` with `"resourceVersion":"<revision>"` in its
/// top-level `metadata` object where Go's ObjectMeta has it: right after `uid`, or, without
/// one, before the first member Go writes after it (anything but name, generateName,
/// namespace, selfLink), else last. Objects stored in Go's order (`berth_api::order`) come out
/// as kube-apiserver writes them. Returns false, appending nothing, when `json` is not an
/// object with a `metadata` object.
pub fn with_resource_version(json: &[u8], revision: i64, out: &mut Vec<u8>) -> bool {
    let Some(place) = metadata_open(json).and_then(|open| place(json, open)) else {
        return false;
    };
    let member = format!(r#""resourceVersion":"{revision}""#);
    let (at, before, after) = match place {
        Place::Only(at) => (at, "", ""),
        Place::After(at) => (at, ",", ""),
        Place::Before(at) => (at, "", ","),
    };
    let (head, tail) = json.split_at(at);
    out.extend_from_slice(head);
    out.extend_from_slice(before.as_bytes());
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(after.as_bytes());
    out.extend_from_slice(tail);
    true
}

/// Where the new member goes: the offset, and which side needs a comma.
enum Place {
    /// Into an empty object.
    Only(usize),
    /// After a member's value.
    After(usize),
    /// Before a member's name.
    Before(usize),
}

/// The members ObjectMeta has before `resourceVersion`.
const BEFORE_RESOURCE_VERSION: [&[u8]; 5] =
    [b"name", b"generateName", b"namespace", b"selfLink", b"uid"];

/// Where `resourceVersion` goes in the object whose `{` ends just before `open`.
fn place(json: &[u8], open: usize) -> Option<Place> {
    let mut i = skip_ws(json, open);
    if *json.get(i)? == b'}' {
        return Some(Place::Only(open));
    }
    let mut before = None;
    loop {
        let start = i;
        let name_end = skip_value(json, i).filter(|_| json.get(i) == Some(&b'"'))?;
        let name = json.get(start + 1..name_end - 1)?;
        i = skip_ws(json, name_end);
        if *json.get(i)? != b':' {
            return None;
        }
        let end = skip_value(json, skip_ws(json, i + 1))?;
        if name == b"uid" {
            return Some(Place::After(end));
        }
        if before.is_none() && !BEFORE_RESOURCE_VERSION.contains(&name) {
            before = Some(start);
        }
        i = skip_ws(json, end);
        match *json.get(i)? {
            b',' => i = skip_ws(json, i + 1),
            b'}' => return Some(before.map_or(Place::After(end), Place::Before)),
            _ => return None,
        }
    }
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The offset just after the JSON value starting at `i` (strings and brackets matched, a
/// scalar runs to the next delimiter); None if it does not end.
fn skip_value(json: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *json.get(i)? {
            b'"' => {
                i += 1;
                loop {
                    match *json.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' | b':' if depth == 0 => return None,
            b if depth == 0 && !b.is_ascii_whitespace() => {
                let len = json
                    .get(i..)?
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']' | b':') || b.is_ascii_whitespace())
                    .unwrap_or(json.len() - i);
                return Some(i + len.max(1));
            }
            _ => {}
        }
        i += 1;
        if depth == 0 {
            return Some(i);
        }
    }
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
                    prop_oneof![
                        Just("metadata".to_owned()),
                        prop::sample::select(vec![
                            "uid",
                            "name",
                            "namespace",
                            "generation",
                            "labels"
                        ])
                        .prop_map(str::to_owned),
                        "[a-z\"]{1,8}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn spliced_text(json: &[u8], revision: i64) -> String {
        let mut out = Vec::new();
        assert!(with_resource_version(json, revision, &mut out));
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn the_version_goes_where_go_writes_it() {
        let cases = [
            (
                r#"{"kind":"Service","metadata":{"name":"a","namespace":"d","uid":"u","creationTimestamp":"t"},"spec":{}}"#,
                r#"{"kind":"Service","metadata":{"name":"a","namespace":"d","uid":"u","resourceVersion":"7","creationTimestamp":"t"},"spec":{}}"#,
            ),
            (
                r#"{"metadata":{"name":"a","generation":1,"labels":{"uid":"x"}}}"#,
                r#"{"metadata":{"name":"a","resourceVersion":"7","generation":1,"labels":{"uid":"x"}}}"#,
            ),
            (
                r#"{"metadata":{"name":"a"}}"#,
                r#"{"metadata":{"name":"a","resourceVersion":"7"}}"#,
            ),
            // Stored before berth wrote Go's order: sorted, so after uid is last.
            (
                r#"{"metadata":{"labels":{"a":"b"},"name":"a","uid":"u"}}"#,
                r#"{"metadata":{"labels":{"a":"b"},"name":"a","uid":"u","resourceVersion":"7"}}"#,
            ),
            (
                r#"{ "metadata" : { "uid" : [ 1 , { } ] , "a" : 2 } }"#,
                r#"{ "metadata" : { "uid" : [ 1 , { } ],"resourceVersion":"7" , "a" : 2 } }"#,
            ),
        ];
        for (stored, served) in cases {
            assert_eq!(spliced_text(stored.as_bytes(), 7), served);
        }
    }

    proptest! {
        #[test]
        fn go_ordered_objects_come_out_as_the_writer_writes_them(
            v in values(), revision in any::<i64>(),
        ) {
            let Value::Object(mut m) = v else { return Ok(()) };
            if !m.get("metadata").is_some_and(Value::is_object) {
                return Ok(());
            }
            m.insert("kind".into(), json!("Pod"));
            m.insert("apiVersion".into(), json!("v1"));
            let mut v = Value::Object(m);
            let stored = berth_api::order::to_vec(&v);
            v["metadata"]["resourceVersion"] = json!(revision.to_string());
            let served = String::from_utf8(berth_api::order::to_vec(&v)).expect("utf-8");
            prop_assert_eq!(spliced_text(&stored, revision), served);
        }

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
