//! The API below kubectl's commands, through `kubectl get --raw` and friends: paging with
//! limit/continue, deletecollection, watch from a resourceVersion (across restarts), bookmarks.

use super::on_both_stores;
use berth_testkit::Cluster;

fn configmaps(c: &Cluster, n: usize) {
    for i in 0..n {
        c.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:02}\n  labels:\n    batch: \"{}\"\ndata:\n  i: \"{i}\"\n", i % 2));
    }
}

on_both_stores!(paging_with_limit_and_continue, |c: &Cluster| {
    configmaps(c, 5);
    let page: serde_json::Value = serde_json::from_str(&c.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=2",
    ]))
    .expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("continue token")
        .to_owned();
    let next: serde_json::Value = serde_json::from_str(&c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}"),
    ]))
    .expect("json");
    assert_eq!(next["items"][0]["metadata"]["name"], "cm-02");
    // kubectl pages through everything with --chunk-size.
    assert_eq!(
        c.ok(&["get", "cm", "--chunk-size=2", "-o", "name"])
            .lines()
            .filter(|l| l.starts_with("configmap/cm-"))
            .count(),
        5
    );
});

on_both_stores!(selectors_page_and_start_watches, |c: &Cluster| {
    configmaps(c, 5);
    let get = |path: &str| -> serde_json::Value {
        serde_json::from_str(&c.ok(&["get", "--raw", path])).expect("json")
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    // A page holds `limit` matching objects; the token goes on past the ones that don't.
    let base = "/api/v1/namespaces/default/configmaps?labelSelector=batch%3D1&limit=1";
    let page = get(base);
    assert_eq!(names(&page), ["cm-01"], "{page}");
    assert!(
        page["items"][0]["metadata"]["resourceVersion"].is_string(),
        "{page}"
    );
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("continue token");
    let next = get(&format!("{base}&continue={token}"));
    assert_eq!(names(&next), ["cm-03"], "{next}");
    let fields = get(
        "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name!%3Dcm-00,metadata.namespace%3Ddefault&labelSelector=batch,batch%20notin%20(1)",
    );
    assert_eq!(names(&fields), ["cm-02", "cm-04"], "{fields}");
    // A watch with a selector starts with the matching objects only.
    let out = c.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&labelSelector=batch%3D0&timeoutSeconds=1",
    ]);
    let added: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("event"))
        .filter(|e| e["type"] == "ADDED")
        .filter_map(|e| e["object"]["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(added, ["cm-00", "cm-02", "cm-04"], "{out}");
});

on_both_stores!(deletecollection_honours_selectors, |c: &Cluster| {
    configmaps(c, 4);
    c.ok(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps?labelSelector=batch%3D0",
    ]);
    let left = c.ok(&["get", "cm", "-o", "name"]);
    assert!(
        left.contains("configmap/cm-01") && left.contains("configmap/cm-03"),
        "{left}"
    );
    assert!(
        !left.contains("configmap/cm-00") && !left.contains("configmap/cm-02"),
        "{left}"
    );
});

on_both_stores!(
    watch_from_a_resource_version_with_bookmarks,
    |c: &Cluster| {
        let rv = c.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]);
        let rv: serde_json::Value = serde_json::from_str(&rv).expect("json");
        let rv = rv["metadata"]["resourceVersion"]
            .as_str()
            .expect("list resourceVersion")
            .to_owned();
        configmaps(c, 2);
        let out = c.ok(&["get", "--raw", &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=3")]);
        let events: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("event"))
            .collect();
        let added: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "ADDED")
            .filter_map(|e| e["object"]["metadata"]["name"].as_str())
            .collect();
        assert_eq!(added, ["cm-00", "cm-01"]);
        assert!(
            events.iter().any(|e| e["type"] == "BOOKMARK"
                && e["object"]["metadata"]["resourceVersion"].is_string()),
            "{out}"
        );
    }
);

#[test]
fn watches_resume_across_a_restart() {
    let mut c = super::cluster(berth_testkit::Backend::Embedded);
    configmaps(&c, 1);
    let rv = c.ok(&[
        "get",
        "cm",
        "cm-00",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    c.ok(&["create", "configmap", "later", "--from-literal=a=1"]);
    // The embedded store keeps its recent history on disk, as etcd does: a client resumes
    // its watch after a restart instead of getting 410 Gone and re-listing.
    c.restart();
    let out = c.ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=2"
        ),
    ]);
    assert!(
        out.contains("\"type\":\"ADDED\"") && out.contains("\"name\":\"later\""),
        "{out}"
    );
    assert!(!out.contains("\"code\":410"), "{out}");
}

#[test]
fn pods_are_bound_and_evicted_through_their_subresources() {
    let c = super::cluster(berth_testkit::Backend::Embedded);
    c.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: berth/whoami\n");
    let binding = c.file(
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"node-9"}}"#,
    );
    let path = "/api/v1/namespaces/default/pods/p/binding";
    let out = c.ok(&["create", "--raw", path, "-f", &binding.to_string_lossy()]);
    assert!(out.contains(r#""status":"Success""#), "{out}");
    assert_eq!(
        c.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"]),
        "node-9"
    );
    let again = c.fails(&["create", "--raw", path, "-f", &binding.to_string_lossy()]);
    assert!(again.contains("already assigned to node"), "{again}");

    let eviction = c.file(
        "eviction.json",
        r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"p"},"deleteOptions":{"gracePeriodSeconds":0}}"#,
    );
    let path = "/api/v1/namespaces/default/pods/p/eviction";
    let out = c.ok(&["create", "--raw", path, "-f", &eviction.to_string_lossy()]);
    assert!(out.contains(r#""code":201"#), "{out}");
    berth_testkit::eventually("the evicted pod to go", || {
        c.fails(&["get", "pod", "p"])
            .contains("NotFound")
            .then_some(())
    });
    let missing = c.fails(&["create", "--raw", path, "-f", &eviction.to_string_lossy()]);
    assert!(
        missing.contains("NotFound") || missing.contains("not found"),
        "{missing}"
    );
}

#[test]
fn queries_are_checked_as_kube_apiserver_checks_them() {
    let c = super::cluster(berth_testkit::Backend::Embedded);
    // An empty continue is no continue; a negative limit is no limit; paths are decoded.
    let all = c.ok(&["get", "--raw", "/api/v1/namespaces?limit=-1&continue="]);
    assert!(all.contains("kube-system"), "{all}");
    let ns = c.ok(&["get", "--raw", "/api/v1/namespaces/kube%2dsystem"]);
    assert!(ns.contains(r#""name":"kube-system""#), "{ns}");
    for (query, want) in [
        ("resourceVersion=abc", "invalid resource version"),
        (
            "resourceVersion=1&resourceVersionMatch=Newest",
            "resourceVersionMatch: Unsupported value",
        ),
        (
            "resourceVersionMatch=Exact",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "fieldValidation=strict",
            "fieldValidation: Unsupported value",
        ),
        (
            "resourceVersion=99999999&resourceVersionMatch=Exact",
            "(Timeout): Too large resource version: 99999999, current:",
        ),
    ] {
        let err = c.fails(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/configmaps?{query}"),
        ]);
        assert!(
            (err.contains("(BadRequest)") || err.contains("(Timeout)")) && err.contains(want),
            "{query}: {err}"
        );
    }
}

#[test]
fn openapi_v2_is_served_as_json() {
    let c = super::cluster(berth_testkit::Backend::Embedded);
    let doc: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/openapi/v2"])).expect("json");
    assert_eq!(doc["swagger"], "2.0");
    assert!(doc["definitions"]["io.k8s.api.core.v1.Service"].is_object());
}

/// `/openapi/v2` as kube-openapi serves it: protobuf to a client asking for it (kubectl's
/// Accept), JSON otherwise, each with its own ETag, and 304 for a matching If-None-Match.
#[test]
fn openapi_v2_negotiates_protobuf_with_etags() {
    let c = super::cluster(berth_testkit::Backend::Embedded);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = c.kube_client().await;
        let get = |accept: &str, etag: &str| {
            let mut r = http::Request::get("/openapi/v2").header("Accept", accept);
            if !etag.is_empty() {
                r = r.header("If-None-Match", etag);
            }
            client.send(r.body(kube::client::Body::empty()).expect("request"))
        };
        let header = |r: &http::Response<kube::client::Body>, h: &str| {
            r.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let proto = get(
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            "",
        )
        .await
        .expect("protobuf");
        assert_eq!(proto.status(), 200);
        assert_eq!(
            header(&proto, "content-type"),
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        );
        let proto_etag = header(&proto, "etag");
        let json = get("application/json", "").await.expect("json");
        assert_eq!(header(&json, "content-type"), "application/json");
        let json_etag = header(&json, "etag");
        assert!(
            proto_etag.starts_with('"') && proto_etag != json_etag,
            "{proto_etag} {json_etag}"
        );
        let again = get(
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            &proto_etag,
        )
        .await
        .expect("conditional");
        assert_eq!(again.status(), 304);
        let stale = get("application/json", &proto_etag)
            .await
            .expect("stale tag");
        assert_eq!(stale.status(), 200);
    });
}

/// Asserts that `parts` occur in `text` in this order.
fn in_order(text: &str, parts: &[&str]) {
    let mut at = 0;
    for p in parts {
        match text.get(at..).and_then(|rest| rest.find(p)) {
            Some(i) => at += i + p.len(),
            None => panic!("{p} not after byte {at} in {text}"),
        }
    }
}

#[test]
fn objects_come_back_in_go_field_order() {
    let c = super::cluster(berth_testkit::Backend::Embedded);
    c.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels:\n    b: \"1\"\n    a: \"2\"\nspec:\n  type: ClusterIP\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n");
    // A GET: TypeMeta, ObjectMeta (resourceVersion right after uid), spec, status.
    let svc = c.ok(&["get", "--raw", "/api/v1/namespaces/default/services/web"]);
    assert!(
        svc.starts_with(r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"web","namespace":"default","uid":""#),
        "{svc}"
    );
    let service_order = [
        r#""uid":""#,
        r#"","resourceVersion":""#,
        r#""creationTimestamp":"#,
        r#""labels":{"a":"2","b":"1"}"#,
        r#""spec":{"ports":[{"protocol":"TCP","port":80,"targetPort":8080}],"selector":{"app":"web"},"clusterIP":"#,
        r#""clusterIPs":["#,
        r#""type":"ClusterIP","sessionAffinity":"None""#,
        r#""status":{"#,
    ];
    in_order(&svc, &service_order);
    // A LIST, from the stored bytes and through a selector (decoded objects).
    for path in [
        "/api/v1/namespaces/default/services",
        "/api/v1/namespaces/default/services?labelSelector=a%3D2",
    ] {
        let list = c.ok(&["get", "--raw", path]);
        assert!(
            list.starts_with(
                r#"{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":""#
            ),
            "{list}"
        );
        let web = r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"web","namespace":"default","uid":""#;
        in_order(&list, &[r#"},"items":["#, web]);
        let item = list.find(web).map_or("", |i| &list[i..]);
        in_order(item, &service_order);
    }
    // A create's answer and a GET of a Pod posted in another order: containers' fields too.
    let pod = c.file(
        "pod.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"ordered"},"spec":{"containers":[{"imagePullPolicy":"IfNotPresent","resources":{},"args":["-c"],"command":["sh"],"image":"berth/whoami","name":"c"}]}}"#,
    );
    let created = c.ok(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods",
        "-f",
        &pod.to_string_lossy(),
    ]);
    let got = c.ok(&["get", "--raw", "/api/v1/namespaces/default/pods/ordered"]);
    for body in [created, got] {
        assert!(
            body.starts_with(r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"ordered","namespace":"default","uid":""#),
            "{body}"
        );
        in_order(
            &body,
            &[
                r#""spec":{"#,
                r#""containers":[{"name":"c","image":"berth/whoami","command":["sh"],"args":["-c"],"resources":{},"#,
                r#""imagePullPolicy":"IfNotPresent""#,
                r#""restartPolicy":"Always""#,
                r#""status":{"#,
            ],
        );
    }
    // Watch events: `type` then `object`, the object in order.
    let events = c.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/services?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dweb",
    ]);
    assert!(
        events.starts_with(r#"{"type":"ADDED","object":{"kind":"Service","apiVersion":"v1","metadata":{"name":"web""#),
        "{events}"
    );
}

on_both_stores!(
    a_selector_watch_follows_objects_in_and_out,
    |c: &Cluster| {
        let list: serde_json::Value = serde_json::from_str(&c.ok(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?limit=1",
        ]))
        .expect("json");
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .expect("resourceVersion")
            .to_owned();
        c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w1\n  labels:\n    k: v\n");
        c.ok(&["label", "cm", "w1", "k=x", "--overwrite"]);
        c.ok(&["label", "cm", "w1", "k=v", "--overwrite"]);
        c.ok(&["annotate", "cm", "w1", "note=1"]);
        c.ok(&["delete", "cm", "w1"]);
        // Replayed from before the first change: each event as the selection sees it, the
        // object written from its stored bytes with the event's resourceVersion.
        let out = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&labelSelector=k%3Dv&timeoutSeconds=1"),
    ]);
        let events: Vec<serde_json::Value> = out
            .lines()
            .map(|l| {
                assert!(l.starts_with(r#"{"type":""#), "{l}");
                serde_json::from_str(l).expect("event")
            })
            .collect();
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            kinds,
            ["ADDED", "DELETED", "ADDED", "MODIFIED", "DELETED"],
            "{out}"
        );
        assert!(
            events
                .iter()
                .all(|e| e["object"]["metadata"]["name"] == "w1"),
            "{out}"
        );
        let rvs: Vec<u64> = events
            .iter()
            .filter_map(|e| {
                e["object"]["metadata"]["resourceVersion"]
                    .as_str()?
                    .parse()
                    .ok()
            })
            .collect();
        assert_eq!(rvs.len(), 5, "{out}");
        assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{out}");
        assert_eq!(
            events[3]["object"]["metadata"]["annotations"]["note"], "1",
            "{out}"
        );
    }
);
