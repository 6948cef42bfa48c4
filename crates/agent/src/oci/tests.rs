//! The OCI runtime's pure parts: command/args merging, environment, users, config.json.

use super::*;

fn container(command: Option<&[&str]>, args: Option<&[&str]>) -> Container {
    let v = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
    Container {
        name: "c".into(),
        command: command.map(v),
        args: args.map(v),
        ..Default::default()
    }
}

fn check(command: Option<&[&str]>, args: Option<&[&str]>, expected: &[&str]) {
    let ep = vec!["/entry".to_owned()];
    let cmd = vec!["default".to_owned()];
    assert_eq!(
        argv(&container(command, args), &ep, &cmd),
        expected,
        "{command:?} {args:?}"
    );
}

#[test]
fn command_and_args_merge_as_kubernetes_documents() {
    check(None, None, &["/entry", "default"]);
    check(Some(&["sh"]), None, &["sh"]);
    check(None, Some(&["-x"]), &["/entry", "-x"]);
    check(Some(&["sh"]), Some(&["-c", "true"]), &["sh", "-c", "true"]);
    check(Some(&[]), Some(&[]), &["/entry", "default"]);
}

#[test]
fn environment_overlays_and_home() {
    let env = environment(
        &[
            "PATH=/bin".into(),
            "A=image".into(),
            "HOME=/home/app".into(),
        ],
        &[("A".into(), "pod".into()), ("B".into(), "b".into())],
        "web",
        "/root",
    );
    assert_eq!(
        env,
        [
            "PATH=/bin",
            "A=pod",
            "HOME=/home/app",
            "HOSTNAME=web",
            "B=b"
        ]
    );
    let env = environment(&[], &[], "web", "/root");
    assert!(env.contains(&"HOME=/root".to_owned()), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
}

#[test]
fn users_from_the_image_and_the_security_context() {
    let t = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(t.path().join("etc")).expect("etc");
    std::fs::write(
        t.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(t.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
    let c = Container::default();
    assert_eq!(
        user(&c, "", t.path()).expect("root"),
        (0, 0, "/root".into())
    );
    assert_eq!(
        user(&c, "app", t.path()).expect("app"),
        (1000, 1001, "/home/app".into())
    );
    assert_eq!(
        user(&c, "app:staff", t.path()).expect("app"),
        (1000, 50, "/home/app".into())
    );
    assert_eq!(
        user(&c, "65534:65534", t.path()).expect("nobody"),
        (65534, 65534, "/".into())
    );
    assert!(user(&c, "ghost", t.path()).is_err());
    let c = Container {
        security_context: Some(k8s_openapi::api::core::v1::SecurityContext {
            run_as_user: Some(7),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(user(&c, "app", t.path()).expect("override").0, 7);
}

#[test]
fn the_runtime_spec_joins_the_pod_and_binds_its_files() {
    let t = tempfile::tempdir().expect("tempdir");
    let image = Image {
        reference: "docker.io/library/bb:1".into(),
        digest: format!("sha256:{}", "a".repeat(64)),
        manifest: serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1,
                       "digest": format!("sha256:{}", "b".repeat(64))},
            "layers": [],
        }))
        .expect("manifest"),
        config: serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["A=1"],
                       "WorkingDir": "/srv"},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .expect("config"),
    };
    let c = Container {
        name: "web".into(),
        args: Some(vec!["--port".into(), "80".into()]),
        ..Default::default()
    };
    let spec = StartSpec {
        netns: "berth-pod-x",
        hostname: "web-1",
        container: &c,
        env: vec![("B".into(), "2".into())],
        log: &t.path().join("web.log"),
        binds: vec![crate::init::Bind {
            source: "/v/conf".into(),
            target: "/etc/app".into(),
            read_only: true,
        }],
    };
    let config = runtime_spec(&spec, &image, t.path(), &t.path().join("bundle")).expect("spec");
    let v = serde_json::to_value(&config).expect("json");
    assert_eq!(v["hostname"], "web-1");
    assert_eq!(
        v["process"]["args"],
        serde_json::json!(["/bin/app", "--port", "80"])
    );
    assert_eq!(v["process"]["cwd"], "/srv");
    let env: Vec<String> = serde_json::from_value(v["process"]["env"].clone()).expect("env");
    for want in ["A=1", "B=2", "HOSTNAME=web-1", "HOME=/root"] {
        assert!(env.contains(&want.to_owned()), "{want} in {env:?}");
    }
    let ns = v["linux"]["namespaces"].as_array().expect("namespaces");
    let path_of = |typ: &str| {
        ns.iter()
            .find(|n| n["type"] == typ)
            .map(|n| n["path"].clone())
    };
    assert_eq!(
        path_of("network"),
        Some(serde_json::json!("/run/netns/berth-pod-x"))
    );
    for own in ["pid", "mount", "ipc", "uts"] {
        assert_eq!(
            path_of(own),
            Some(serde_json::Value::Null),
            "{own} is the container's own"
        );
    }
    let mounts = v["mounts"].as_array().expect("mounts");
    let mount = |dest: &str| mounts.iter().find(|m| m["destination"] == dest).cloned();
    assert_eq!(
        mount("/etc/resolv.conf").map(|m| m["source"].clone()),
        Some(serde_json::json!("/etc/netns/berth-pod-x/resolv.conf"))
    );
    assert!(mount("/etc/hosts").is_some() && mount("/etc/hostname").is_some());
    let app = mount("/etc/app").expect("the volume bind");
    assert!(
        app["options"]
            .as_array()
            .expect("options")
            .contains(&serde_json::json!("ro"))
    );
    let caps = v["process"]["capabilities"]["bounding"]
        .as_array()
        .expect("caps");
    assert!(
        caps.contains(&serde_json::json!("CAP_NET_BIND_SERVICE")),
        "{caps:?}"
    );
}

#[test]
fn resources_become_cgroup_limits_as_the_kubelet_sets_them() {
    let with = |res: serde_json::Value| {
        let mut c = container(None, None);
        c.resources = Some(serde_json::from_value(res).expect("resources"));
        resources(&c)
    };
    let r = with(serde_json::json!({"limits": {"cpu": "250m", "memory": "16Mi"}}));
    let cpu = r.cpu().clone().expect("cpu");
    assert_eq!(cpu.shares(), Some(256), "the request defaults to the limit");
    assert_eq!((cpu.quota(), cpu.period()), (Some(25_000), Some(100_000)));
    assert_eq!((*r.memory()).expect("memory").limit(), Some(16 << 20));
    let r = with(serde_json::json!({"requests": {"cpu": "2"}}));
    let cpu = r.cpu().clone().expect("cpu");
    assert_eq!((cpu.shares(), cpu.quota()), (Some(2048), None));
    assert!(r.memory().is_none());
    // BestEffort: the kubelet's minimum shares; no limits.
    let r = resources(&container(None, None));
    assert_eq!(r.cpu().clone().expect("cpu").shares(), Some(2));
    // A tiny limit still gets the kubelet's minimum quota.
    let r = with(serde_json::json!({"limits": {"cpu": "1m"}}));
    assert_eq!(r.cpu().clone().expect("cpu").quota(), Some(1000));
}
