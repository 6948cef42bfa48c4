//! How the embedded store keeps values in memory: LZ4-packed against a dictionary shared by
//! the values of one key group, since objects of one kind repeat each other's structure
//! (field names, defaults, managedFields). At 10,000 Services + 10,000 Pods the plain values
//! were the API server's largest memory (66 of 194 MB live); a Pod packs some 16 times
//! smaller against another Pod, a Service or an EndpointSlice 3 to 5 times.
//!
//! A group's dictionary is the first value stored under it (that value stays plain and is
//! the dictionary, no copy), kept for the life of the process; every packed value holds its
//! dictionary, so one can be replaced without touching the others. Packing is a pure memory trade: the file and every value a reader
//! gets are the bytes as written.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

/// Values shorter than this stay plain: too little to gain.
const MIN_PACKED: usize = 128;
/// Most bytes of a value taken as its group's dictionary.
const MAX_DICTIONARY: usize = 16 << 10;

/// A value as memory holds it; cloning shares it.
#[derive(Clone)]
pub(crate) enum Held {
    Plain(Bytes),
    Packed {
        dictionary: Arc<Bytes>,
        data: Arc<[u8]>,
        /// The unpacked length.
        len: u32,
    },
}

/// A packed value did not unpack to its length: memory corruption or a bug, never input.
#[derive(Debug)]
pub(crate) struct Unpack;

impl Held {
    /// The value as written.
    pub(crate) fn bytes(&self) -> Result<Bytes, Unpack> {
        match self {
            Held::Plain(b) => Ok(b.clone()),
            Held::Packed {
                dictionary,
                data,
                len,
            } => {
                let len = *len as usize;
                let mut out = vec![0; len];
                match lz4_flex::block::decompress_into_with_dict(data, &mut out, dictionary) {
                    Ok(n) if n == len => Ok(Bytes::from(out)),
                    _ => Err(Unpack),
                }
            }
        }
    }

    /// Bytes of memory the value itself takes (its dictionary is shared and not counted).
    pub(crate) fn held_len(&self) -> usize {
        match self {
            Held::Plain(b) => b.len(),
            Held::Packed { data, .. } => data.len(),
        }
    }
}

/// Packs values; owned by the one thread that writes (dictionaries are chosen as values come).
#[derive(Default)]
pub(crate) struct Packer {
    dictionaries: HashMap<String, Arc<Bytes>>,
    scratch: Vec<u8>,
}

impl Packer {
    /// `value` as memory keeps it: packed against the dictionary of `key`'s group when that
    /// saves at least a fifth, else plain (sharing the caller's bytes).
    pub(crate) fn pack(&mut self, key: &str, value: &Bytes) -> Held {
        let Ok(len) = u32::try_from(value.len()) else {
            return Held::Plain(value.clone());
        };
        if value.len() < MIN_PACKED {
            return Held::Plain(value.clone());
        }
        let group = group(key);
        let Some(dictionary) = self.dictionaries.get(group).cloned() else {
            let d = value.slice(..value.len().min(MAX_DICTIONARY));
            self.dictionaries.insert(group.to_owned(), Arc::new(d));
            return Held::Plain(value.clone());
        };
        self.scratch
            .resize(lz4_flex::block::get_maximum_output_size(value.len()), 0);
        match lz4_flex::block::compress_into_with_dict(value, &mut self.scratch, &dictionary) {
            Ok(n) if n + n / 4 < value.len() => Held::Packed {
                dictionary,
                data: Arc::from(&self.scratch[..n]),
                len,
            },
            _ => Held::Plain(value.clone()),
        }
    }
}

/// The group whose dictionary packs `key`'s value: the key without its last two segments
/// (`/registry/pods/default/web-1` -> `/registry/pods`), so values of one kind share one
/// across namespaces. Keys of fewer segments share the group of their first.
fn group(key: &str) -> &str {
    let mut cut = key.rsplitn(3, '/');
    match (cut.next(), cut.next(), cut.next()) {
        (Some(_), Some(_), Some(rest)) => rest,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod(name: &str, ip: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"default","labels":{{"app":"web"}}}},"spec":{{"containers":[{{"name":"c","image":"nginx","ports":[{{"containerPort":8080,"protocol":"TCP"}}],"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"Always"}}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst"}},"status":{{"phase":"Running","podIP":"{ip}"}}}}"#
        ))
    }

    #[test]
    fn groups_are_the_key_without_namespace_and_name() {
        assert_eq!(group("/registry/pods/default/web-1"), "/registry/pods");
        assert_eq!(group("/registry/namespaces/default"), "/registry");
        assert_eq!(group("/registry/x"), "");
        assert_eq!(group("k"), "");
        assert_eq!(group(""), "");
    }

    #[test]
    fn values_of_a_kind_pack_small_against_the_first_and_unpack_whole() {
        let mut p = Packer::default();
        let first = pod("web-0", "10.244.0.2");
        let second = pod("web-1", "10.244.0.3");
        let a = p.pack("/registry/pods/default/web-0", &first);
        let b = p.pack("/registry/pods/other/web-1", &second);
        assert!(matches!(a, Held::Plain(_)), "the dictionary stays plain");
        assert!(matches!(b, Held::Packed { .. }));
        assert!(
            b.held_len() * 8 < second.len(),
            "{} of {}",
            b.held_len(),
            second.len()
        );
        assert_eq!(a.bytes().expect("unpacks"), first);
        assert_eq!(b.bytes().expect("unpacks"), second);
    }

    #[test]
    fn short_and_incompressible_values_stay_plain() {
        let mut p = Packer::default();
        let short = Bytes::from_static(b"{}");
        assert!(matches!(p.pack("/registry/a/b/c", &short), Held::Plain(_)));
        // Bytes with no repeats (a xorshift stream) and unlike the group's dictionary.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let noise = Bytes::from(noise);
        p.pack("/registry/secrets/default/a", &pod("a", "10.0.0.1"));
        let held = p.pack("/registry/secrets/default/b", &noise);
        assert!(matches!(held, Held::Plain(_)));
        assert_eq!(held.bytes().expect("unpacks"), noise);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever the values and keys, each unpacks to exactly what was packed, and packed
        /// values take fewer bytes than they hold.
        #[test]
        fn every_value_unpacks_to_itself(
            values in proptest::collection::vec(
                (prop_oneof![Just("/registry/pods/a/"), Just("/registry/services/b/"), Just("/x/")],
                 proptest::collection::vec(any::<u8>(), 0..2048),
                 any::<bool>()),
                1..24),
        ) {
            let mut p = Packer::default();
            let packed: Vec<(Bytes, Held)> = values
                .iter()
                .enumerate()
                .map(|(i, (prefix, raw, like_pod))| {
                    let v = if *like_pod { pod(&format!("p{i}"), &format!("{raw:?}")) } else { Bytes::from(raw.clone()) };
                    let held = p.pack(&format!("{prefix}{i}"), &v);
                    (v, held)
                })
                .collect();
            for (v, held) in packed {
                prop_assert_eq!(held.bytes().expect("unpacks"), v.clone());
                if matches!(held, Held::Packed { .. }) {
                    prop_assert!(held.held_len() < v.len());
                }
            }
        }
    }
}
