//! Registry pulls (issue 17): Debian's `docker-registry` started by the test on 127.0.0.1
//! inside the cluster's node netns (where `berth server` and so its agent run), the busybox
//! test image imported into a side store and pushed there with `berth image push`, then
//! pulled back with `berth image pull` by tag and by digest, and by the agent for pods:
//! `imagePullPolicy: Always`, a missing tag (`ErrImagePull`, then `ImagePullBackOff`), and
//! basic auth through an `imagePullSecrets` Secret.

use std::path::{Path, PathBuf};
use std::process::Output;

use berth_testkit::{Cluster, Node, Registry, eventually, images};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

/// `berth image ARGS --data-dir DIR` inside the node netns (the registry is on its loopback).
fn berth_image(node: &Node, dir: &Path, args: &[&str]) -> Output {
    node.command(bin())
        .arg("image")
        .args(args)
        .arg(format!("--data-dir={}", dir.display()))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("berth image")
}

fn ok(out: Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Imports the busybox test image (CMD `sh -c cmd`) as `reference` into the side store
/// `store` under the cluster's directory; returns its directory.
fn import_busybox(c: &Cluster, node: &Node, store: &str, reference: &str, cmd: &str) -> PathBuf {
    let side = c.dir().join(store);
    let image = images::busybox(&["sh", "-c", cmd]);
    let tar = c.dir().join(format!("{store}.tar"));
    std::fs::write(&tar, image.docker_save(&[reference]).expect("docker save")).expect("write");
    ok(
        berth_image(node, &side, &["import", &tar.display().to_string()]),
        "import",
    );
    side
}

/// Imports the busybox test image as `reference` into a side store under the cluster's
/// directory and pushes it to its registry; returns the side store's directory.
fn push_busybox(c: &Cluster, node: &Node, reference: &str, cmd: &str, extra: &[&str]) -> PathBuf {
    let side = import_busybox(c, node, "pusher", reference, cmd);
    let mut args = vec!["push", reference];
    args.extend_from_slice(extra);
    let out = ok(berth_image(node, &side, &args), "push");
    assert!(
        out.contains(&format!("pushed {reference} (sha256:")),
        "{out}"
    );
    side
}

/// `kubectl create secret docker-registry regcred` for the registry's user `puller`.
fn regcred(c: &Cluster, reg: &Registry) {
    c.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", reg.addr),
        "--docker-username=puller",
        "--docker-password=s3cret",
    ]);
}

fn waiting_reason(c: &Cluster, pod: &str) -> String {
    c.ok(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
    ])
}

fn events(c: &Cluster, pod: &str) -> String {
    c.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ])
}

fn pod(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n{extra}  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: Always\n"
    )
}

fn running(c: &Cluster, name: &str) {
    eventually(&format!("{name} to run"), || {
        let phase = c.ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
        (phase == "Running").then_some(())
    });
}

#[test]
fn pulls_by_tag_and_digest_and_pods_pull_with_always() {
    let c = Cluster::start_on_node(bin(), &["--insecure-registry=127.0.0.1:5000"]);
    let node = c.node().expect("a node cluster");
    let reg = Registry::start(node, 5000, None);
    let tag = format!("{}/berth/bb:v1", reg.addr);
    let insecure = format!("--insecure-registry={}", reg.addr);
    let side = push_busybox(&c, node, &tag, "exec sleep 3600", &[&insecure]);

    // By tag into an empty store: resolved to the manifest, both blobs fetched.
    let fresh = c.dir().join("fresh");
    let out = ok(
        berth_image(node, &fresh, &["pull", &tag, &insecure]),
        "pull",
    );
    let digest = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{tag}: resolved to ")))
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .to_owned();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{out}");
    assert!(out.contains("fetched 2 blob(s)"), "{out}");
    assert!(out.contains("Image is up to date for sha256:"), "{out}");
    // Again: nothing to fetch.
    let out = ok(
        berth_image(node, &fresh, &["pull", &tag, &insecure]),
        "pull",
    );
    assert!(out.contains("fetched 0 blob(s)"), "{out}");
    // By digest into another store, then listed under that reference.
    let by_digest = format!("{}/berth/bb@{digest}", reg.addr);
    let other = c.dir().join("other");
    let out = ok(
        berth_image(node, &other, &["pull", &by_digest, &insecure]),
        "pull by digest",
    );
    assert!(out.contains(&format!("resolved to {digest}")), "{out}");
    let ls = ok(berth_image(node, &other, &["ls"]), "ls");
    assert!(ls.contains(&by_digest), "{ls}");
    // A digest the registry does not have, and HTTPS where the registry speaks HTTP, fail.
    let wrong = format!("{}/berth/bb@sha256:{}", reg.addr, "0".repeat(64));
    let out = berth_image(node, &other, &["pull", &wrong, &insecure]);
    assert!(!out.status.success(), "pulling a digest that is not there");
    let out = berth_image(node, &other, &["pull", &tag]);
    assert!(!out.status.success(), "HTTPS to a plain HTTP registry");

    // An image index: linux on another architecture first, then this machine's, each
    // naming its own image; the pull picks this machine's.
    let other_tag = format!("{}/berth/bb:v2", reg.addr);
    push_busybox(
        &c,
        node,
        &other_tag,
        "echo v2; exec sleep 3600",
        &[&insecure],
    );
    let v2 = ok(
        berth_image(node, &side, &["pull", &other_tag, &insecure]),
        "pull v2",
    );
    let v2 = v2
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{other_tag}: resolved to ")))
        .expect("v2's digest")
        .to_owned();
    let entry = |digest: &str, arch: &str| {
        let hex = digest.trim_start_matches("sha256:");
        let size = std::fs::metadata(side.join("images/blobs/sha256").join(hex))
            .expect("the manifest blob")
            .len();
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let here = if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&digest, "s390x"), entry(&v2, here)],
    });
    let index_file = c.file("index.json", &index.to_string());
    let put = node.exec(&[
        "curl",
        "-sf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &format!("@{}", index_file.display()),
        &format!("http://{}/v2/berth/bb/manifests/multi", reg.addr),
    ]);
    assert!(put.status.success(), "PUT the index: {put:?}");
    let multi = format!("{}/berth/bb:multi", reg.addr);
    let out = ok(
        berth_image(node, &other, &["pull", &multi, &insecure]),
        "pull the index",
    );
    assert!(out.contains(&format!("{multi}: resolved to {v2}")), "{out}");

    // A pod with imagePullPolicy: Always pulls the image and runs it.
    c.wait_node_ready();
    c.apply(&pod("pulled", &tag, ""));
    running(&c, "pulled");
    assert_eq!(
        c.ok(&["exec", "pulled", "--", "cat", "/etc/berth-image"])
            .trim(),
        images::MARKER
    );
    let ev = events(&c, "pulled");
    assert!(
        ev.contains(&format!("Pulling: Pulling image \"{tag}\"")),
        "{ev}"
    );
    assert!(
        ev.contains(&format!("Pulled: Successfully pulled image \"{tag}\" in "))
            && ev.contains("Image size: "),
        "{ev}"
    );
    let image_id = c.ok(&[
        "get",
        "pod",
        "pulled",
        "-o",
        "jsonpath={.status.containerStatuses[0].imageID}",
    ]);
    assert_eq!(image_id, format!("{}/berth/bb@{digest}", reg.addr));

    // A tag the registry lacks: ErrImagePull, then ImagePullBackOff, with the events.
    let missing = format!("{}/berth/bb:missing", reg.addr);
    c.apply(&pod("missing", &missing, ""));
    eventually("missing to back off", || {
        (waiting_reason(&c, "missing") == "ImagePullBackOff").then_some(())
    });
    let ev = events(&c, "missing");
    for want in [
        format!("Failed: Failed to pull image \"{missing}\": "),
        "Failed: Error: ErrImagePull".to_owned(),
        format!("BackOff: Back-off pulling image \"{missing}\""),
        "Failed: Error: ImagePullBackOff".to_owned(),
    ] {
        assert!(ev.contains(&want), "{want:?} in {ev}");
    }
    assert!(ev.contains("not found"), "{ev}");
    let message = c.ok(&[
        "get",
        "pod",
        "missing",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.message}",
    ]);
    assert!(
        message.starts_with(&format!(
            "Back-off pulling image \"{missing}\": ErrImagePull: "
        )),
        "{message}"
    );
}

#[test]
fn image_pull_secrets_authenticate_to_the_registry() {
    let c = Cluster::start_on_node(bin(), &["--insecure-registry=127.0.0.1:5001"]);
    let node = c.node().expect("a node cluster");
    let reg = Registry::start(node, 5001, Some(("puller", "s3cret")));
    let tag = format!("{}/private/bb:v1", reg.addr);
    let insecure = format!("--insecure-registry={}", reg.addr);
    // Without credentials the registry refuses.
    let side = import_busybox(&c, node, "anon", &tag, "exec sleep 3600");
    let out = berth_image(node, &side, &["push", &tag, &insecure]);
    assert!(
        !out.status.success(),
        "an anonymous push to an htpasswd registry"
    );
    push_busybox(
        &c,
        node,
        &tag,
        "exec sleep 3600",
        &[&insecure, "--creds=puller:s3cret"],
    );

    c.wait_node_ready();
    regcred(&c, &reg);
    c.apply(&pod("anonymous", &tag, ""));
    c.apply(&pod(
        "authed",
        &tag,
        "  imagePullSecrets:\n  - name: regcred\n",
    ));
    running(&c, "authed");
    eventually("anonymous to fail its pull", || {
        let r = waiting_reason(&c, "anonymous");
        (r == "ErrImagePull" || r == "ImagePullBackOff").then_some(())
    });
    let ev = events(&c, "anonymous");
    assert!(
        ev.contains(&format!("Failed: Failed to pull image \"{tag}\": ")),
        "{ev}"
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, written under `dir`: (ca, cert, key).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "berth test registry CA");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("certificate");
    let paths = (dir.join("ca.pem"), dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

#[test]
fn an_https_registry_with_a_private_ca_is_trusted_with_registry_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(certs.path());
    let trust = format!("--registry-ca={}", ca.display());
    let c = Cluster::start_on_node(bin(), &[&trust]);
    let node = c.node().expect("a node cluster");
    let reg = Registry::start_tls(node, 5002, (&cert, &key));
    let tag = format!("{}/private/bb:v1", reg.addr);

    // Over HTTPS, the registry's CA is not among the system's roots: refused without it.
    let side = import_busybox(&c, node, "untrusted", &tag, "exec sleep 3600");
    let out = berth_image(node, &side, &["push", &tag]);
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !out.status.success() && err.contains("certificate"),
        "a push to a registry whose CA is not trusted: {err}"
    );
    // A file that holds no certificate is refused up front, naming it.
    let out = berth_image(node, &side, &["push", &tag, "--registry-ca=/dev/null"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("registry CA /dev/null: holds no PEM certificate"),
        "{err}"
    );
    push_busybox(&c, node, &tag, "exec sleep 3600", &[&trust]);
    let fresh = c.dir().join("fresh");
    let out = ok(berth_image(node, &fresh, &["pull", &tag, &trust]), "pull");
    assert!(out.contains("fetched 2 blob(s)"), "{out}");

    // The agent, started with the same flag, pulls it for a pod.
    c.wait_node_ready();
    c.apply(&pod("tls", &tag, ""));
    running(&c, "tls");
}

/// A token service as distribution's token auth expects one (the part Docker Hub's
/// auth.docker.io plays): `GET /token?service=..&scope=..` with basic credentials `user`
/// answers a JWT (ES256, its signing certificate in `x5c`) granting the scopes asked for;
/// without them, 401. Listens on 127.0.0.1:`port` in the node; returns the number of tokens
/// issued so far.
fn token_server(
    node: &Node,
    port: u16,
    user: (&'static str, &'static str),
    issuer: &'static str,
    service: &'static str,
    key_pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use base64::Engine;
    use std::io::{BufRead, BufReader, Write};
    let listener = node.on_thread(|| {
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("token server listen")
    });
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = issued.clone();
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key_pkcs8,
        &rng,
    )
    .expect("signing key");
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let std_b64 = base64::engine::general_purpose::STANDARD;
    let basic = format!("Basic {}", std_b64.encode(format!("{}:{}", user.0, user.1)));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("authorization")
                {
                    authorized = value.trim() == basic;
                }
            }
            let target = first.split_whitespace().nth(1).unwrap_or("/");
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let access: Vec<serde_json::Value> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .map(percent_decode)
                .filter_map(|scope| {
                    let (kind, rest) = scope.split_once(':')?;
                    let (name, actions) = rest.rsplit_once(':')?;
                    Some(serde_json::json!({
                        "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>(),
                    }))
                })
                .collect();
            let reply = if authorized {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_secs();
                let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [std_b64.encode(&cert_der)]});
                let claims = serde_json::json!({
                    "iss": issuer, "sub": user.0, "aud": service, "exp": now + 300,
                    "nbf": now - 10, "iat": now, "jti": format!("t{now}"), "access": access,
                });
                let signed = format!(
                    "{}.{}",
                    url.encode(header.to_string()),
                    url.encode(claims.to_string())
                );
                let sig = key.sign(&rng, signed.as_bytes()).expect("sign");
                let token = format!("{signed}.{}", url.encode(sig.as_ref()));
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body =
                    serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                        .to_string();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    issued
}

/// `%XX` decoding of a query value (`+` as a space).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn bearer_token_auth_through_the_registry_s_token_service() {
    let c = Cluster::start_on_node(bin(), &["--insecure-registry=127.0.0.1:5003"]);
    let node = c.node().expect("a node cluster");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth test token signer");
    let cert = params.self_signed(&key).expect("certificate");
    let bundle = c.dir().join("token-signer.pem");
    std::fs::write(&bundle, cert.pem()).expect("write");
    let (issuer, service) = ("berth-test-issuer", "berth-test-registry");
    let issued = token_server(
        node,
        5004,
        ("puller", "s3cret"),
        issuer,
        service,
        key.serialize_der(),
        cert.der().to_vec(),
    );
    let reg = Registry::start_token(
        node,
        5003,
        &berth_testkit::TokenAuth {
            realm: "http://127.0.0.1:5004/token",
            service,
            issuer,
            bundle: &bundle,
        },
    );
    let tag = format!("{}/private/bb:v1", reg.addr);
    let insecure = format!("--insecure-registry={}", reg.addr);
    push_busybox(
        &c,
        node,
        &tag,
        "exec sleep 3600",
        &[&insecure, "--creds=puller:s3cret"],
    );
    assert!(
        issued.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no token issued"
    );
    // Anonymous: the token service refuses, so does the pull.
    let out = berth_image(node, &c.dir().join("anon"), &["pull", &tag, &insecure]);
    assert!(
        !out.status.success(),
        "an anonymous pull of a token-protected image"
    );
    let out = ok(
        berth_image(
            node,
            &c.dir().join("authed"),
            &["pull", &tag, &insecure, "--creds=puller:s3cret"],
        ),
        "pull with a token",
    );
    assert!(out.contains("fetched 2 blob(s)"), "{out}");

    // The agent gets its token with the pod's imagePullSecrets.
    let before = issued.load(std::sync::atomic::Ordering::SeqCst);
    c.wait_node_ready();
    regcred(&c, &reg);
    c.apply(&pod(
        "bearer",
        &tag,
        "  imagePullSecrets:\n  - name: regcred\n",
    ));
    running(&c, "bearer");
    assert!(
        issued.load(std::sync::atomic::Ordering::SeqCst) > before,
        "the agent pulled without a token"
    );
}
