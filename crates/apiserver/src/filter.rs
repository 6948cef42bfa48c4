//! `?labelSelector=` and `?fieldSelector=` as one predicate over objects, shared by list,
//! watch and deletecollection.
//!
//! A filter also tests a stored object's JSON without decoding all of it
//! ([`Filter::matches_stored`]): only the members the selectors read (`metadata.labels`, the
//! named fields, `metadata.name`) are decoded, into a pruned object the same predicate then
//! judges; the rest is skipped by the parser. serde offers no such partial decode, so the
//! seed that prunes is written here.

use std::borrow::Cow;
use std::fmt;

use berth_api::fields::{self, FieldSelector};
use berth_api::resources::Resource;
use berth_api::selector::Selector;
use berth_store::KeyValue;
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{ApiError, Result};
use crate::meta::labels;
use crate::request::Params;

/// Which objects a request is about.
#[derive(Debug, Clone)]
pub struct Filter {
    labels: Option<Selector>,
    fields: Option<FieldSelector>,
    /// The object name from a single-object watch URL.
    name: Option<String>,
    /// The members `matches` reads, for `matches_stored`.
    paths: Paths,
}

impl Filter {
    /// Parses the selectors, rejecting field labels the resource does not support, as
    /// kube-apiserver does (`400 field label not supported: ...`).
    pub fn new(r: &Resource, params: &Params) -> Result<Self> {
        let labels = match params
            .label_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            None => None,
            Some(s) => Some(Selector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?),
        };
        let fields = match params
            .field_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            None => None,
            Some(s) => {
                let sel =
                    FieldSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?;
                for req in sel.requirements() {
                    if !r.is_selectable(&req.field) {
                        return Err(ApiError::BadRequest(format!(
                            "field label not supported: {}",
                            req.field
                        )));
                    }
                }
                Some(sel)
            }
        };
        let mut paths = Paths::default();
        if labels.is_some() {
            paths.add(["metadata", "labels"]);
        }
        for req in fields.iter().flat_map(FieldSelector::requirements) {
            paths.add(req.field.split('.'));
        }
        Ok(Self {
            labels,
            fields,
            name: None,
            paths,
        })
    }

    pub fn with_name(mut self, name: Option<String>) -> Self {
        if name.is_some() {
            self.paths.add(["metadata", "name"]);
        }
        self.name = name;
        self
    }

    /// Whether every object matches (no selector, no name).
    pub fn is_everything(&self) -> bool {
        self.labels.is_none() && self.fields.is_none() && self.name.is_none()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(n) = &self.name
            && obj
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                != Some(n.as_str())
        {
            return false;
        }
        if let Some(l) = &self.labels
            && !l.matches(&labels(obj))
        {
            return false;
        }
        match &self.fields {
            Some(f) => f.matches(|field| fields::fields_of(obj, field)),
            None => true,
        }
    }

    /// [`Filter::matches`] for a stored object (its resourceVersion, which no selector can
    /// name, left out), decoding only the members the selectors read. A value that does not
    /// parse is decoded whole, so it fails as the decoded path does.
    pub fn matches_stored(&self, kv: &KeyValue) -> Result<bool> {
        if self.is_everything() {
            return Ok(true);
        }
        match self.prune(&kv.value) {
            Ok(pruned) => Ok(self.matches(&pruned)),
            Err(_) => crate::rest::decode_kv(kv).map(|obj| self.matches(&obj)),
        }
    }

    /// The object in `json` with only the members in `self.paths`; anything else that stands
    /// where a path expects an object reads as null, which every selector treats alike (no
    /// labels, no field value).
    fn prune(&self, json: &[u8]) -> serde_json::Result<Value> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let pruned = Prune(&self.paths).deserialize(&mut de)?;
        de.end()?;
        Ok(pruned)
    }
}

/// Member paths as a tree: `metadata` -> {`labels`, `name`}.
#[derive(Debug, Clone, Default)]
struct Paths {
    /// Keep this member's whole value (a path ends here).
    whole: bool,
    children: Vec<(String, Paths)>,
}

impl Paths {
    fn add<'a>(&mut self, path: impl IntoIterator<Item = &'a str>) {
        let mut node = self;
        for part in path {
            let i = match node.children.iter().position(|(n, _)| n == part) {
                Some(i) => i,
                None => {
                    node.children.push((part.to_owned(), Paths::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[i].1;
        }
        node.whole = true;
    }
}

/// Decodes a JSON value keeping only what `Paths` name; see [`Filter::prune`].
#[derive(Clone, Copy)]
struct Prune<'p>(&'p Paths);

impl<'de> DeserializeSeed<'de> for Prune<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.whole {
            Value::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Prune<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            match self.0.children.iter().find(|(n, _)| *n == key) {
                // A repeated member replaces the one before, as in a decoded `Value`.
                Some((_, p)) => {
                    let v = map.next_value_seed(Prune(p))?;
                    out.insert(key.into_owned(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A member name, borrowed from the input unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use berth_api::resources::by_plural;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn filter(group: &str, plural: &str, labels: &str, fields: &str) -> Result<Filter> {
        let r = by_plural(group, "v1", plural)
            .ok_or_else(|| ApiError::BadRequest(format!("no resource {plural}")))?;
        let params = Params {
            label_selector: Some(labels.to_owned()),
            field_selector: Some(fields.to_owned()),
            ..Params::default()
        };
        Filter::new(r, &params)
    }

    fn stored(json: &str) -> KeyValue {
        KeyValue {
            key: "/core/pods/default/x".to_owned(),
            value: bytes::Bytes::from(json.to_owned()),
            create_revision: 1,
            mod_revision: 2,
        }
    }

    /// `matches_stored` on `json`, after checking it agrees with `matches` on the decoded
    /// object and did not need the whole decode.
    fn both(f: &Filter, json: &str) -> bool {
        assert!(f.prune(json.as_bytes()).is_ok(), "prune {json}");
        let decoded: Value = serde_json::from_str(json).expect("test JSON");
        let got = f.matches_stored(&stored(json)).expect("matches_stored");
        assert_eq!(got, f.matches(&decoded), "{json} with {f:?}");
        got
    }

    #[test]
    fn escaped_labels_and_member_names() {
        let obj = r#"{"kind":"Pod","\u006detadata":{"name":"a","l\u0061bels":{"\u0061pp":"w\u0065b","tier":"d\"b\\","n":1}},"spec":{"nodeName":"n\u00e9"}}"#;
        let sel = |l: &str, f: &str| both(&filter("", "pods", l, f).expect("selector"), obj);
        assert!(sel("app=web", ""));
        assert!(sel("app in (db,web)", ""));
        assert!(!sel("app!=web", ""));
        assert!(!sel("app notin (web)", ""));
        assert!(sel("tier", ""));
        assert!(sel("tier!=db", ""));
        assert!(!sel("!tier", ""));
        // A label whose value is not a string is not a label.
        assert!(!sel("n", ""));
        assert!(sel("!n", ""));
        assert!(sel("", "spec.nodeName=n\u{e9}"));
        assert!(sel("app=web", "metadata.name=a,spec.nodeName!=n"));
        assert!(!sel("", "metadata.name!=a"));
    }

    #[test]
    fn absent_and_odd_fields_read_as_upstream() {
        let node = |json: &str, fields: &str| {
            both(&filter("", "nodes", "", fields).expect("selector"), json)
        };
        assert!(node(
            r#"{"metadata":{"name":"n"}}"#,
            "spec.unschedulable=false"
        ));
        assert!(node(
            r#"{"spec":{"unschedulable":true}}"#,
            "spec.unschedulable=true"
        ));
        assert!(node(r#"{"spec":"x"}"#, "spec.unschedulable=false"));
        assert!(node(
            r#"{"spec":{"unschedulable":null}}"#,
            "spec.unschedulable!=true"
        ));
        assert!(node(r#"{"spec":[1,{"a":2}]}"#, "spec.unschedulable=false"));
        assert!(node(r#"[1,2]"#, "metadata.name="));
        let rs = |json: &str, fields: &str| {
            both(
                &filter("apps", "replicasets", "", fields).expect("selector"),
                json,
            )
        };
        assert!(rs(r#"{"status":{}}"#, "status.replicas=0"));
        assert!(rs(r#"{"status":{"replicas":3}}"#, "status.replicas=3"));
        assert!(rs(
            r#"{"status":{"replicas":1.5e0}}"#,
            "status.replicas=1.5"
        ));
        // A repeated member replaces the one before it, as in the decoded object.
        let pods = filter("", "pods", "app=web", "").expect("selector");
        assert!(!both(
            &pods,
            r#"{"metadata":{"labels":{"app":"web"}},"metadata":{"name":"a"}}"#
        ));
        assert!(both(
            &pods,
            r#"{"metadata":{"labels":{"app":"db"},"labels":{"app":"web"}}}"#
        ));
    }

    #[test]
    fn a_named_watch_reads_the_name() {
        let f = filter("", "pods", "", "")
            .expect("selector")
            .with_name(Some("a".to_owned()));
        assert!(!f.is_everything());
        assert!(both(&f, r#"{"metadata":{"name":"a"}}"#));
        assert!(!both(&f, r#"{"metadata":{"name":"b"}}"#));
        assert!(!both(&f, r#"{"metadata":{}}"#));
    }

    #[test]
    fn unparseable_bytes_fail_as_the_decoded_path_does() {
        let f = filter("", "pods", "app", "").expect("selector");
        let err = f.matches_stored(&stored(r#"{"metadata":"#));
        assert!(
            matches!(&err, Err(ApiError::Internal(m)) if m.contains("corrupt object at /core/pods/default/x")),
            "{err:?}"
        );
        assert!(matches!(
            filter("", "pods", "", "").map(|f| f.matches_stored(&stored("not json"))),
            Ok(Ok(true))
        ));
    }

    const LABEL_KEYS: &[&str] = &["app", "tier", "x", "a.b/c"];
    const FIELDS: &[&str] = &[
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.unschedulable",
        "spec.hostNetwork",
        "status.phase",
        "status.replicas",
        "type",
        "involvedObject.kind",
        "reason",
    ];
    /// Values objects hold and selectors compare, both ways.
    const WORDS: &[&str] = &["", "web", "db", "Running", "true", "false", "0", "3", "1.5"];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            prop_oneof![Just(0i64), Just(3), Just(-1)].prop_map(Value::from),
            Just(json!(1.5)),
            prop::sample::select(WORDS).prop_map(Value::from),
            Just(json!("é\"\\\n")),
            Just(json!({"web": "db"})),
            Just(json!(["web"])),
        ]
    }

    /// An object with some of `FIELDS` and labels set, parents sometimes not objects.
    fn object() -> impl Strategy<Value = Value> {
        let labels = prop_oneof![
            3 => prop::collection::vec((prop::sample::select(LABEL_KEYS), leaf()), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            1 => leaf(),
        ];
        (
            prop::collection::vec((prop::sample::select(FIELDS), leaf()), 0..6),
            prop::option::of(labels),
            prop::option::of((
                prop::sample::select(&["metadata", "spec", "status"][..]),
                leaf(),
            )),
        )
            .prop_map(|(fields, labels, clobber)| {
                let mut obj =
                    json!({"kind": "X", "data": {"metadata": {"labels": {"app": "web"}}}});
                for (path, v) in fields {
                    set(&mut obj, path, v);
                }
                if let Some(l) = labels {
                    set(&mut obj, "metadata.labels", l);
                }
                if let Some((member, v)) = clobber {
                    obj[member] = v;
                }
                obj
            })
    }

    fn set(obj: &mut Value, path: &str, v: Value) {
        let mut cur = obj;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            if !cur.get(*part).is_some_and(Value::is_object) {
                cur[*part] = json!({});
            }
            cur = &mut cur[*part];
        }
        cur[parts[parts.len() - 1]] = v;
    }

    fn label_requirement() -> impl Strategy<Value = String> {
        let key = prop::sample::select(LABEL_KEYS);
        let word = prop::sample::select(&["web", "db", "true", "0"][..]);
        let words = prop::collection::vec(word.clone(), 1..3).prop_map(|w| w.join(","));
        prop_oneof![
            (key.clone(), word.clone()).prop_map(|(k, v)| format!("{k}={v}")),
            (key.clone(), word).prop_map(|(k, v)| format!("{k}!={v}")),
            (key.clone(), words.clone()).prop_map(|(k, v)| format!("{k} in ({v})")),
            (key.clone(), words).prop_map(|(k, v)| format!("{k} notin ({v})")),
            key.clone().prop_map(str::to_owned),
            key.prop_map(|k| format!("!{k}")),
        ]
    }

    fn field_requirement() -> impl Strategy<Value = String> {
        (
            prop::sample::select(FIELDS),
            prop::sample::select(&["=", "!="][..]),
            prop::sample::select(WORDS),
        )
            .prop_map(|(f, op, v)| format!("{f}{op}{v}"))
    }

    /// The same JSON with some names and words written with `\u` escapes.
    fn escaped(json: &str, mask: u8) -> String {
        let mut out = json.to_owned();
        for (i, (from, to)) in [
            ("\"metadata\"", "\"\\u006detadata\""),
            ("\"labels\"", "\"l\\u0061bels\""),
            ("\"app\"", "\"\\u0061pp\""),
            ("\"web\"", "\"w\\u0065b\""),
            ("\"spec\"", "\"sp\\u0065c\""),
            ("\"Running\"", "\"\\u0052unning\""),
        ]
        .into_iter()
        .enumerate()
        {
            if mask & (1 << i) != 0 {
                out = out.replace(from, to);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn stored_matches_decoded(
            obj in object(),
            dup in prop::option::of(object()),
            mask in any::<u8>(),
            resource in prop::sample::select(&[("", "pods"), ("", "nodes"), ("", "events"), ("apps", "replicasets")][..]),
            labels in prop::collection::vec(label_requirement(), 0..3),
            fields in prop::collection::vec(field_requirement(), 0..3),
            name in prop::option::of(prop::sample::select(&["web", "db"][..])),
        ) {
            let mut json = obj.to_string();
            // A repeated `metadata` member, which replaces the first.
            if let Some(dup) = dup {
                json.pop();
                json.push_str(&format!(r#","metadata":{}}}"#, dup["metadata"]));
            }
            let json = escaped(&json, mask);
            let Ok(f) = filter(resource.0, resource.1, &labels.join(","), &fields.join(",")) else {
                // Only fields the resource does not support are refused.
                prop_assert!(fields.iter().any(|t| !by_plural(resource.0, "v1", resource.1)
                    .is_some_and(|r| r.is_selectable(t.split(['=', '!']).next().unwrap_or("")))));
                return Ok(());
            };
            let f = f.with_name(name.map(str::to_owned));
            prop_assert!(f.prune(json.as_bytes()).is_ok(), "prune {}", json);
            let decoded: Value = serde_json::from_str(&json).expect("test JSON");
            let got = f.matches_stored(&stored(&json));
            prop_assert!(matches!(got, Ok(m) if m == f.matches(&decoded)), "{} with {:?}: {:?}", json, f, got);
        }
    }
}
