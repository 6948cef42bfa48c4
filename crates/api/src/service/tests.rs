//! Table tests: each manifest goes through the create path (defaults, then validation) and
//! must yield exactly the messages kube-apiserver prints.

use serde_json::{Value, json};

use super::*;

fn parse(manifest: &Value) -> Service {
    serde_json::from_value(manifest.clone()).expect("test manifest parses")
}

fn strings(errs: &FieldErrors) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

/// Runs the create path on `manifest` and compares every error message in order.
fn check(manifest: Value, expected: &[&str]) {
    let mut svc = parse(&manifest);
    default_service(&mut svc);
    let got = strings(&validate_service(&svc));
    assert_eq!(got, expected, "manifest: {manifest}");
}

fn svc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn web(spec_extra: Value) -> Value {
    let mut spec = json!({"selector": {"app": "web"}, "ports": [{"port": 80}]});
    if let (Some(base), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    svc("web", spec)
}

const DNS1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

#[test]
fn valid_services() {
    check(web(json!({})), &[]);
    check(
        web(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})),
        &[],
    );
    check(
        web(
            json!({"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}),
        ),
        &[],
    );
    check(web(json!({"clusterIP": "None"})), &[]);
    check(web(json!({"clusterIP": "None", "ports": []})), &[]);
    check(
        svc(
            "ext",
            json!({"type": "ExternalName", "externalName": "example.com."}),
        ),
        &[],
    );
    check(
        web(
            json!({"clusterIP": "10.96.0.10", "ports": [{"name": "a", "port": 80, "targetPort": "http"}, {"name": "b", "port": 80, "protocol": "UDP"}]}),
        ),
        &[],
    );
    check(web(json!({"sessionAffinity": "ClientIP"})), &[]);
    check(web(json!({"externalIPs": ["192.0.2.10"]})), &[]);
}

#[test]
fn invalid_services() {
    let too_long = "a".repeat(64);
    let cases: Vec<(Value, Vec<String>)> = vec![
        (svc("MyService", json!({"ports": [{"port": 80}]})), vec![format!("metadata.name: Invalid value: \"MyService\": {DNS1035}")]),
        (
            svc(&too_long, json!({"ports": [{"port": 80}]})),
            vec![format!("metadata.name: Invalid value: \"{too_long}\": must be no more than 63 characters")],
        ),
        (
            web(json!({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]})),
            vec!["spec.ports[1].name: Duplicate value: \"http\"".into()],
        ),
        (
            web(json!({"ports": [{"name": "http", "port": 80}, {"port": 81}]})),
            vec!["spec.ports[1].name: Required value".into()],
        ),
        (
            web(json!({"ports": [{"port": 0}]})),
            vec![
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive".into(),
                "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive".into(),
            ],
        ),
        (
            web(json!({"ports": [{"port": 70000, "targetPort": 8080}]})),
            vec!["spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive".into()],
        ),
        (
            web(json!({"ports": [{"port": 80, "targetPort": 70000}]})),
            vec!["spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive".into()],
        ),
        (
            web(json!({"ports": [{"port": 80, "protocol": "FOO"}]})),
            vec!["spec.ports[0].protocol: Unsupported value: \"FOO\": supported values: \"SCTP\", \"TCP\", \"UDP\"".into()],
        ),
        (
            web(json!({"ports": [{"port": 80, "nodePort": 30080}]})),
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'".into()],
        ),
        (svc("ext", json!({"type": "ExternalName"})), vec!["spec.externalName: Required value".into()]),
        (
            web(json!({"selector": {"a b": "web"}})),
            vec!["spec.selector: Invalid value: \"a b\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into()],
        ),
        (
            web(json!({"clusterIP": "abc"})),
            vec!["spec.clusterIPs[0]: Invalid value: \"abc\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into()],
        ),
        (
            web(json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]})),
            vec!["spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}".into()],
        ),
        (
            web(json!({"type": "Foo"})),
            vec!["spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".into()],
        ),
        (
            web(json!({"sessionAffinity": "Sticky"})),
            vec!["spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"".into()],
        ),
        (
            web(json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 90000}}})),
            vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 90000: must be greater than 0 and less than 86400".into()],
        ),
        (
            web(json!({"externalTrafficPolicy": "Local"})),
            vec!["spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services".into()],
        ),
        (
            web(json!({"type": "NodePort", "clusterIP": "None"})),
            vec!["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services".into()],
        ),
        (web(json!({"ports": []})), vec!["spec.ports: Required value".into()]),
        (
            svc("ext", json!({"type": "ExternalName", "externalName": "Bad_Name"})),
            vec!["spec.externalName: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into()],
        ),
        (
            svc("ext", json!({"type": "ExternalName", "externalName": "example.com", "clusterIP": "10.96.0.10"})),
            vec!["spec.clusterIPs: Forbidden: may not be set for ExternalName services".into()],
        ),
        (
            web(json!({"externalIPs": ["127.0.0.1"]})),
            vec!["spec.externalIPs[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)".into()],
        ),
        (
            web(json!({"loadBalancerSourceRanges": ["10.0.0.0/8"]})),
            vec!["spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'".into()],
        ),
        (
            web(json!({"ports": [{"name": "Http", "port": 80}]})),
            vec!["spec.ports[0].name: Invalid value: \"Http\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into()],
        ),
        (
            web(json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]})),
            vec!["spec.ports[1].nodePort: Duplicate value: 30080".into()],
        ),
        (
            web(json!({"clusterIP": "10.96.0.10", "ipFamilies": ["IPv6"]})),
            vec!["spec.clusterIPs[0]: Invalid value: \"10.96.0.10\": expected an IPv6 value as indicated by `ipFamilies[0]`".into()],
        ),
    ];
    for (manifest, want) in cases {
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        check(manifest, &want);
    }
}

#[test]
fn load_balancer_local_needs_health_check_port() {
    // The allocator assigns it before validation; without one validation must complain.
    check(
        web(
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80, "nodePort": 30080}]}),
        ),
        &["spec.healthCheckNodePort: Required value"],
    );
}

#[test]
fn defaults_on_create() {
    let mut s = parse(&web(
        json!({"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}),
    ));
    default_service(&mut s);
    let spec = s.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        spec.session_affinity_config
            .and_then(|c| c.client_ip)
            .and_then(|c| c.timeout_seconds),
        Some(10800)
    );
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(port.target_port, Some(IntOrString::Int(80)));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(spec.allocate_load_balancer_node_ports, Some(true));
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_owned()]));
    assert_eq!(spec.cluster_ip, None, "allocation is the caller's job");

    let mut s = parse(&web(json!({})));
    default_service(&mut s);
    let spec = s.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.external_traffic_policy, None);
    assert_eq!(spec.allocate_load_balancer_node_ports, None);

    let mut s = parse(&svc(
        "ext",
        json!({"type": "ExternalName", "externalName": "example.com"}),
    ));
    default_service(&mut s);
    let spec = s.spec.expect("spec");
    assert_eq!(spec.internal_traffic_policy, None);
    assert_eq!(spec.ip_family_policy, None);
    assert_eq!(spec.ip_families, None);

    let mut s = parse(&web(json!({"clusterIP": "None"})));
    default_service(&mut s);
    let spec = s.spec.expect("spec");
    assert_eq!(spec.cluster_ips, Some(vec!["None".to_owned()]));
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_owned()]));

    let mut s = parse(&svc("headless", json!({"clusterIP": "None"})));
    default_service(&mut s);
    let spec = s.spec.expect("spec");
    assert_eq!(spec.ip_family_policy.as_deref(), Some("RequireDualStack"));
    assert_eq!(
        spec.ip_families,
        Some(vec!["IPv4".to_owned(), "IPv6".to_owned()])
    );

    let mut s = parse(&web(json!({"clusterIP": "fd00::10"})));
    default_service(&mut s);
    assert_eq!(
        s.spec.expect("spec").ip_families,
        Some(vec!["IPv6".to_owned()])
    );
}

/// A stored Service as the server would have it after create and allocation.
fn stored(spec: Value) -> Service {
    let mut s = parse(&web(spec));
    default_service(&mut s);
    s.metadata.uid = Some("uid-1".into());
    s.metadata.resource_version = Some("1".into());
    s
}

fn update(old: &Service, new_manifest: Value) -> (Service, Vec<String>) {
    let mut new = parse(&new_manifest);
    new.metadata.uid = old.metadata.uid.clone();
    prepare_service_update(&mut new, old);
    let errs = strings(&validate_service_update(&new, old));
    (new, errs)
}

#[test]
fn update_carries_allocated_values() {
    let old = stored(
        json!({"clusterIP": "10.96.0.10", "type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
    );
    let (new, errs) = update(
        &old,
        web(json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]})),
    );
    assert_eq!(errs, Vec::<String>::new());
    let spec = new.spec.expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
    assert_eq!(spec.cluster_ips, Some(vec!["10.96.0.10".to_owned()]));
    assert_eq!(spec.ports.expect("ports")[0].node_port, Some(30080));
}

#[test]
fn update_rejects_cluster_ip_change() {
    let old = stored(json!({"clusterIP": "10.96.0.10"}));
    let (_, errs) = update(&old, web(json!({"clusterIP": "10.96.0.11"})));
    assert_eq!(
        errs,
        vec![
            "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.11\"}: may not change once set"
        ]
    );
}

#[test]
fn update_to_cluster_ip_clears_node_ports() {
    let old = stored(
        json!({"clusterIP": "10.96.0.10", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    let (new, errs) = update(
        &old,
        web(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "externalTrafficPolicy": "Cluster", "ports": [{"port": 80, "nodePort": 30080}]}),
        ),
    );
    assert_eq!(errs, Vec::<String>::new());
    let spec = new.spec.expect("spec");
    assert_eq!(spec.ports.expect("ports")[0].node_port, None);
    assert_eq!(spec.external_traffic_policy, None);

    // A nodePort the Service never had is the client's explicit choice, so it stays and fails.
    let (_, errs) = update(
        &old,
        web(json!({"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30099}]})),
    );
    assert_eq!(
        errs,
        vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    );
}

#[test]
fn update_to_external_name_clears_cluster_ips() {
    let old = stored(json!({"clusterIP": "10.96.0.10"}));
    let (new, errs) = update(
        &old,
        web(
            json!({"type": "ExternalName", "externalName": "example.com", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}),
        ),
    );
    assert_eq!(errs, Vec::<String>::new());
    let spec = new.spec.expect("spec");
    assert_eq!(
        (
            spec.cluster_ip,
            spec.cluster_ips,
            spec.ip_families,
            spec.ip_family_policy
        ),
        (None, None, None, None)
    );
}

#[test]
fn update_metadata_is_immutable() {
    let old = stored(json!({"clusterIP": "10.96.0.10"}));
    let mut manifest = web(json!({}));
    manifest["metadata"]["namespace"] = json!("other");
    let (_, errs) = update(&old, manifest);
    assert_eq!(
        errs,
        vec!["metadata.namespace: Invalid value: \"other\": field is immutable"]
    );
}
