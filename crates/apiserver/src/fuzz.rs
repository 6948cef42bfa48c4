//! Property tests: no request body, patch, path or query string makes the server panic.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::patch::{self, PatchType};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z$/]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                "[a-z$/]{0,6}|\\$patch|\\$retainKeys|ports|containers|finalizers",
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = crate::rest::parse_body(&bytes, "application/json");
        for kind in [PatchType::Json, PatchType::Merge, PatchType::Strategic, PatchType::Apply] {
            let mut doc = json!({"spec": {"ports": [{"port": 80}]}});
            let _ = patch::apply(kind, &mut doc, &bytes, "Service");
        }
    }

    #[test]
    fn patches_of_any_shape_never_panic(doc in json_value(), p in json_value()) {
        let text = p.to_string();
        for kind in [PatchType::Json, PatchType::Merge, PatchType::Strategic] {
            let mut d = doc.clone();
            let _ = patch::apply(kind, &mut d, text.as_bytes(), "Service");
        }
    }

    #[test]
    fn decoding_any_object_never_panics(obj in json_value()) {
        let mut o = obj;
        if let Value::Object(m) = &mut o {
            m.insert("apiVersion".into(), json!("v1"));
            m.insert("kind".into(), json!("Service"));
        }
        let _ = berth_api::object::decode("", "Service", o);
    }

    #[test]
    fn paths_and_queries_never_panic(path in "(/[a-z0-9.{}-]{0,12}){0,8}", query in "[a-zA-Z=&%0-9]{0,40}") {
        let _ = crate::request::parse(&path);
        let _ = crate::request::Params::parse(Some(&query));
    }
}
