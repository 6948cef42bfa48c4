//! Writes image archives (docker save's format and OCI image layout tars) from layer tars
//! and an image config: how tests and benchmarks make images without a registry or docker.

use std::collections::HashMap;

use oci_spec::image::{
    ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder,
    MediaType, RootFsBuilder,
};

use crate::store::hex;
use crate::{Error, Result};

/// An image to write: layers (uncompressed tars, lowest first) and the config's process.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    pub layers: Vec<Vec<u8>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

fn sha256(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
    )
}

impl ImageSpec {
    fn config(&self) -> Result<Vec<u8>> {
        let mut c = ConfigBuilder::default().env(self.env.clone());
        if let Some(e) = &self.entrypoint {
            c = c.entrypoint(e.clone());
        }
        if let Some(cmd) = &self.cmd {
            c = c.cmd(cmd.clone());
        }
        if let Some(w) = &self.working_dir {
            c = c.working_dir(w.clone());
        }
        if let Some(u) = &self.user {
            c = c.user(u.clone());
        }
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(self.layers.iter().map(|l| sha256(l)).collect::<Vec<_>>())
            .build()?;
        let image = ImageConfigurationBuilder::default()
            .architecture(crate::platform::arch())
            .os("linux")
            .config(c.build()?)
            .rootfs(rootfs)
            .build()?;
        serde_json::to_vec(&image).map_err(|source| Error::Json {
            what: "config".into(),
            source,
        })
    }

    /// docker save's format: `manifest.json` naming `<hex>/layer.tar` and `<hex>.json`.
    pub fn docker_save(&self, tags: &[&str]) -> Result<Vec<u8>> {
        let config = self.config()?;
        let config_name = format!("{}.json", &sha256(&config)[7..]);
        let mut files = vec![(config_name.clone(), config)];
        let mut layer_names = Vec::new();
        for l in &self.layers {
            let name = format!("{}/layer.tar", &sha256(l)[7..]);
            layer_names.push(name.clone());
            files.push((name, l.clone()));
        }
        let manifest = serde_json::json!([{
            "Config": config_name, "RepoTags": tags, "Layers": layer_names,
        }]);
        files.push(("manifest.json".into(), manifest.to_string().into_bytes()));
        tar_of(&files)
    }

    /// An OCI image layout tar, the manifest annotated with `name` as containerd exports.
    pub fn oci_archive(&self, name: &str) -> Result<Vec<u8>> {
        let config = self.config()?;
        let mut files = vec![(blob(&config), config.clone())];
        let mut layers = Vec::new();
        for l in &self.layers {
            files.push((blob(l), l.clone()));
            layers.push(Descriptor::new(
                MediaType::ImageLayer,
                l.len() as u64,
                parse(&sha256(l))?,
            ));
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config.len() as u64,
                parse(&sha256(&config))?,
            ))
            .layers(layers)
            .build()?;
        let manifest = serde_json::to_vec(&manifest).map_err(|source| Error::Json {
            what: "manifest".into(),
            source,
        })?;
        let mut desc = Descriptor::new(
            MediaType::ImageManifest,
            manifest.len() as u64,
            parse(&sha256(&manifest))?,
        );
        desc.set_annotations(Some(HashMap::from([
            ("io.containerd.image.name".to_owned(), name.to_owned()),
            (
                "org.opencontainers.image.ref.name".to_owned(),
                name.to_owned(),
            ),
        ])));
        files.push((blob(&manifest), manifest));
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .manifests(vec![desc])
            .build()?;
        let index = serde_json::to_vec(&index).map_err(|source| Error::Json {
            what: "index".into(),
            source,
        })?;
        files.push(("index.json".into(), index));
        files.push((
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ));
        tar_of(&files)
    }
}

fn parse(d: &str) -> Result<oci_spec::image::Digest> {
    d.parse().map_err(Error::Spec)
}

fn blob(b: &[u8]) -> String {
    format!("blobs/sha256/{}", &sha256(b)[7..])
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_slice())
            .map_err(Error::Archive)?;
    }
    b.into_inner().map_err(Error::Archive)
}

/// Builds a layer tar: directories, files, symlinks and whiteouts, in the order given.
#[derive(Default)]
pub struct LayerBuilder(Vec<(String, tar::EntryType, Vec<u8>, u32)>);

impl LayerBuilder {
    pub fn dir(mut self, path: &str) -> Self {
        self.0
            .push((path.into(), tar::EntryType::Directory, Vec::new(), 0o755));
        self
    }
    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        self.0
            .push((path.into(), tar::EntryType::Regular, data.to_vec(), mode));
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.0.push((
            path.into(),
            tar::EntryType::Symlink,
            target.as_bytes().to_vec(),
            0o777,
        ));
        self
    }
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.0.push((
            path.into(),
            tar::EntryType::Link,
            target.as_bytes().to_vec(),
            0o644,
        ));
        self
    }
    /// The tar's bytes. Names and link targets are written raw (no `..` checks), so tests
    /// can make hostile layers too.
    pub fn build(self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, mode) in self.0 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            let (body, link): (&[u8], &[u8]) = match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => (&[], &data),
                _ => (&data, &[]),
            };
            h.set_size(body.len() as u64);
            let old = h.as_old_mut();
            let n = path.len().min(old.name.len());
            old.name[..n].copy_from_slice(&path.as_bytes()[..n]);
            let l = link.len().min(old.linkname.len());
            old.linkname[..l].copy_from_slice(&link[..l]);
            h.set_cksum();
            let _ = b.append(&h, body);
        }
        b.into_inner().unwrap_or_default()
    }
}
