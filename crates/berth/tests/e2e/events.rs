//! events.k8s.io/v1 Events: the same objects as core/v1 Events (one storage, fields mapped:
//! note/message, regarding/involvedObject, reportingController/reportingComponent), with
//! discovery, CRUD, field selectors, watch, tables and `kubectl events`.

use berth_testkit::Backend;

const EVENT: &str = "apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: hello.1
  namespace: default
eventTime: \"2026-01-01T00:00:00.000000Z\"
reportingController: example.com/tester
reportingInstance: tester-1
action: Testing
reason: Tested
note: it works
type: Normal
regarding:
  kind: ConfigMap
  name: cm
  namespace: default
";

#[test]
fn events_k8s_io_and_core_events_are_one_object() {
    let c = crate::cluster(Backend::Embedded);
    let res = c.ok(&["api-resources", "--api-group=events.k8s.io"]);
    assert!(
        res.lines().any(|l| l.split_whitespace().eq([
            "events",
            "ev",
            "events.k8s.io/v1",
            "true",
            "Event"
        ])),
        "{res}"
    );
    let out = c.kubectl_stdin(&["create", "-f", "-"], EVENT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "event.events.k8s.io/hello.1 created\n"
    );
    let v1 = |path: &str| {
        c.ok(&[
            "get",
            "events.events.k8s.io",
            "hello.1",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    let core = |path: &str| {
        c.ok(&[
            "get",
            "events.v1.",
            "hello.1",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    assert_eq!(v1("{.note}"), "it works");
    assert_eq!(v1("{.regarding.name}"), "cm");
    assert_eq!(core("{.message}"), "it works");
    assert_eq!(
        core("{.involvedObject.kind}/{.involvedObject.name}"),
        "ConfigMap/cm"
    );
    assert_eq!(core("{.reportingComponent}"), "example.com/tester");
    assert_eq!(core("{.apiVersion}"), "v1");
    // Tables for both versions, and `kubectl events`.
    let table = c.ok(&["get", "events.events.k8s.io"]);
    assert!(
        table.contains("Normal") && table.contains("Tested") && table.contains("configmap/cm"),
        "{table}"
    );
    let events = c.ok(&["events"]);
    assert!(
        events.contains("Tested") && events.contains("it works"),
        "{events}"
    );
    // Field selectors in events.k8s.io's names.
    let by_regarding = c.ok(&[
        "get",
        "events.events.k8s.io",
        "--field-selector=regarding.name=cm,reportingController=example.com/tester",
        "-o",
        "name",
    ]);
    assert_eq!(by_regarding, "event.events.k8s.io/hello.1\n");
    let none = c.ok(&[
        "get",
        "events.events.k8s.io",
        "--field-selector=regarding.name=other",
        "-o",
        "name",
    ]);
    assert_eq!(none, "");
    // A patch through events.k8s.io changes the core message; a watch sees the new note.
    c.ok(&[
        "patch",
        "events.events.k8s.io",
        "hello.1",
        "--type=merge",
        "-p",
        r#"{"note":"patched"}"#,
    ]);
    assert_eq!(core("{.message}"), "patched");
    let watched = c.ok(&[
        "get",
        "--raw",
        "/apis/events.k8s.io/v1/namespaces/default/events?watch=1&timeoutSeconds=1",
    ]);
    assert!(
        watched.contains(r#""type":"ADDED""#) && watched.contains(r#""note":"patched""#),
        "{watched}"
    );
    // Deleted through either version, it is gone from both.
    c.ok(&["delete", "events.events.k8s.io", "hello.1"]);
    let err = c.fails(&["get", "events.v1.", "hello.1"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}
