//! Layer application: whiteouts, opaque directories, links, modes, and hostile layers
//! (`..`, absolute paths, symlink and hard-link escapes) that must never write outside.

use std::os::unix::fs::MetadataExt;

use proptest::prelude::*;

use super::*;
use crate::archive::LayerBuilder;

fn apply(root: &Path, layer: LayerBuilder) -> Result<()> {
    apply_layer(root, layer.build().as_slice())
}

fn gz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("in memory");
    e.finish().expect("in memory")
}

#[test]
fn two_layers_with_whiteouts_opaque_dirs_and_links() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    let lower = LayerBuilder::default()
        .dir("etc")
        .file("etc/gone", b"x", 0o644)
        .file("etc/kept", b"k", 0o600)
        .dir("opq")
        .file("opq/old", b"o", 0o644)
        .dir("bin")
        .file("bin/busybox", b"#!bb", 0o755)
        .symlink("bin/sh", "busybox")
        .hardlink("bin/ash", "bin/busybox");
    apply(root, lower).expect("lower");
    let upper = LayerBuilder::default()
        .file("etc/.wh.gone", b"", 0o644)
        .file("opq/new", b"n", 0o644)
        .file("opq/.wh..wh..opq", b"", 0o644)
        .file("bin/sh2", b"s", 0o4755);
    apply_layer(root, gz(&upper.build()).as_slice()).expect("upper, gzip'd");
    assert!(!root.join("etc/gone").exists());
    assert!(!root.join("etc/.wh.gone").exists());
    assert_eq!(std::fs::read(root.join("etc/kept")).expect("kept"), b"k");
    let meta = std::fs::metadata(root.join("etc/kept")).expect("kept");
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert!(
        !root.join("opq/old").exists(),
        "hidden by the opaque marker"
    );
    assert_eq!(std::fs::read(root.join("opq/new")).expect("new"), b"n");
    assert!(!root.join("opq/.wh..wh..opq").exists());
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).expect("link"),
        Path::new("busybox")
    );
    let (a, b) = (
        std::fs::metadata(root.join("bin/ash")).expect("ash"),
        std::fs::metadata(root.join("bin/busybox")).expect("busybox"),
    );
    assert_eq!(a.ino(), b.ino(), "a hard link");
    assert_eq!(b.mode() & 0o7777, 0o755);
    let s = std::fs::metadata(root.join("bin/sh2")).expect("sh2");
    assert_eq!(s.mode() & 0o7777, 0o4755, "set-id bits survive the chown");
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// A skippable frame (magic 0x184D2A5X, little-endian length, payload), as zstd:chunked
/// layers carry their metadata.
fn skippable(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x53, 0x2a, 0x4d, 0x18];
    out.extend(u32::try_from(payload.len()).expect("small").to_le_bytes());
    out.extend(payload);
    out
}

#[test]
fn zstd_layers_of_several_frames_and_skippable_frames_apply() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    let tar = LayerBuilder::default()
        .dir("etc")
        .file("etc/motd", &[b'z'; 5000], 0o644)
        .file("etc/.wh.nothing", b"", 0o644)
        .symlink("etc/link", "motd")
        .build();
    // Split mid-entry: the tar stream continues across frames, as `zstd -d` joins them.
    let (a, b) = tar.split_at(700);
    let mut blob = skippable(b"leading metadata");
    blob.extend(zstd(a));
    blob.extend(zstd(b));
    blob.extend(skippable(&[7; 40]));
    apply_layer(root, blob.as_slice()).expect("zstd layer");
    assert_eq!(
        std::fs::read(root.join("etc/motd")).expect("motd"),
        vec![b'z'; 5000]
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/link")).expect("link"),
        Path::new("motd")
    );

    let mut truncated = zstd(&tar);
    truncated.truncate(truncated.len() / 2);
    let e = apply_layer(&root.join("etc"), truncated.as_slice());
    assert!(e.is_err(), "a truncated zstd layer is an error: {e:?}");
}

#[test]
fn a_file_replaces_a_directory_and_back() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    apply(
        root,
        LayerBuilder::default().dir("a").file("a/b", b"1", 0o644),
    )
    .expect("one");
    apply(root, LayerBuilder::default().file("a", b"2", 0o644)).expect("two");
    assert_eq!(std::fs::read(root.join("a")).expect("a"), b"2");
    apply(root, LayerBuilder::default().file("a/c", b"3", 0o644)).expect("three");
    assert_eq!(std::fs::read(root.join("a/c")).expect("a/c"), b"3");
}

#[test]
fn hostile_layers_stay_inside() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::create_dir_all(&outside).expect("outside");
    let out = outside.display().to_string();
    let layer = LayerBuilder::default()
        .file("../escape", b"x", 0o644)
        .file("/abs", b"x", 0o644)
        .symlink("up", "../..")
        .file("up/escape2", b"x", 0o644)
        .symlink("o", &out)
        .file("o/escape3", b"x", 0o644)
        .hardlink("h", &format!("{out}/../outside/sentinel"))
        .file("o/.wh.sentinel", b"", 0o644)
        .symlink("d", &out)
        .file("d/.wh..wh..opq", b"", 0o644);
    std::fs::write(outside.join("sentinel"), b"s").expect("sentinel");
    let _ = apply(&root, layer);
    let names: Vec<_> = std::fs::read_dir(&outside)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("sentinel")]);
    assert!(!t.path().join("escape").exists());
    assert!(
        root.join("escape").exists(),
        "`..` at the top stays at the top"
    );
    assert!(root.join("abs").exists());
    let inside = root.join(format!("{}/escape3", out.trim_start_matches('/')));
    assert!(
        root.join("o/escape3").exists() || inside.exists(),
        "kept inside the root"
    );
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("".to_owned()),
        Just(".wh..wh..opq".to_owned()),
        "(\\.wh\\.)?[abl]{1,2}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        proptest::bool::ANY,
        proptest::collection::vec(component(), 1..5),
    )
        .prop_map(|(abs, c)| format!("{}{}", if abs { "/" } else { "" }, c.join("/")))
}

#[derive(Debug, Clone)]
enum Op {
    Dir(String),
    File(String),
    Symlink(String, String),
    Hardlink(String, String),
}

fn op(outside: &'static str) -> impl Strategy<Value = Op> {
    let target = prop_oneof![
        path(),
        Just(outside.to_owned()),
        Just("../../..".to_owned())
    ];
    prop_oneof![
        path().prop_map(Op::Dir),
        path().prop_map(Op::File),
        (path(), target.clone()).prop_map(|(p, t)| Op::Symlink(p, t)),
        (path(), target).prop_map(|(p, t)| Op::Hardlink(p, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_hostile_layers_never_write_outside(layers in proptest::collection::vec(proptest::collection::vec(op("/OUTSIDE"), 1..12), 1..3)) {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&root).expect("root");
        std::fs::create_dir_all(&outside).expect("outside");
        std::fs::write(outside.join("sentinel"), b"s").expect("sentinel");
        let out = outside.display().to_string();
        for ops in layers {
            let mut b = LayerBuilder::default();
            for o in ops {
                let fix = |s: String| s.replace("/OUTSIDE", &out);
                b = match o {
                    Op::Dir(p) => b.dir(&p),
                    Op::File(p) => b.file(&p, b"x", 0o644),
                    Op::Symlink(p, t) => b.symlink(&p, &fix(t)),
                    Op::Hardlink(p, t) => b.hardlink(&p, &fix(t)),
                };
            }
            let _ = apply(&root, b);
        }
        let names: Vec<_> = std::fs::read_dir(&outside).expect("ls").flatten().map(|e| e.file_name()).collect();
        prop_assert_eq!(names, [std::ffi::OsString::from("sentinel")]);
        prop_assert_eq!(std::fs::read(outside.join("sentinel")).expect("sentinel"), b"s");
        let top: Vec<_> = std::fs::read_dir(t.path()).expect("ls").flatten().map(|e| e.file_name()).collect();
        prop_assert_eq!(top.len(), 2);
    }
}

proptest! {
    /// A zstd layer with bytes changed anywhere is an error or some tree, never a panic.
    #[test]
    fn corrupted_zstd_layers_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let t = tempfile::tempdir().expect("tempdir");
        let tar = LayerBuilder::default()
            .dir("d")
            .file("d/f", &[b'q'; 3000], 0o644)
            .build();
        let mut blob = zstd(&tar);
        for (at, byte) in edits {
            let at = at % blob.len();
            blob[at] = byte;
        }
        let _ = apply_layer(t.path(), blob.as_slice());
    }
}
