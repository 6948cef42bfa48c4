//! Which image names select which built-in program.
//!
//! The registry host, tag and digest are ignored; what remains of the reference (the
//! repository path, with Docker Hub's `library/` dropped) selects the program:
//!
//! | repository                                                        | program        |
//! |-------------------------------------------------------------------|----------------|
//! | `berth/whoami`, `traefik/whoami`, `containous/whoami`,             | whoami         |
//! | `emilevauge/whoami`, `whoami/whoami` (`r.deso.tech/whoami/whoami`) |                |
//! | `berth/number-crunch`, `number-crunch` (`number-crunch:local`),    | number-crunch  |
//! | `cloudqubes/number-crunch`                                         |                |
//!
//! `containous/` and `emilevauge/` are traefik/whoami's earlier names; `r.deso.tech/whoami/whoami`
//! and `number-crunch:local` are the images the tutorials deploy.

use std::fmt;

/// A program built into the `berth` binary that stands in for a container image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// traefik/whoami: echoes the host name, addresses and the request back as text.
    Whoami,
    /// cloudqubes/number-crunch: square and cube roots as JSON on port 8080.
    NumberCrunch,
}

impl Builtin {
    /// Every built-in program, in the order usage messages list them.
    pub const ALL: [Builtin; 2] = [Builtin::Whoami, Builtin::NumberCrunch];

    /// The program an image reference selects (see the module docs for the table), or `None`
    /// for an image berth cannot run. Never fails on malformed references: they select nothing.
    pub fn from_image(image: &str) -> Option<Builtin> {
        match repository(image) {
            "berth/whoami" | "traefik/whoami" | "containous/whoami" | "emilevauge/whoami"
            | "whoami/whoami" => Some(Builtin::Whoami),
            "berth/number-crunch" | "number-crunch" | "cloudqubes/number-crunch" => {
                Some(Builtin::NumberCrunch)
            }
            _ => None,
        }
    }

    /// The name `berth workload <name>` takes.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Whoami => "whoami",
            Builtin::NumberCrunch => "number-crunch",
        }
    }

    /// The program for a `berth workload` name.
    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The port the upstream image listens on when not told otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Builtin::Whoami => 80,
            Builtin::NumberCrunch => 8080,
        }
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The repository path of an image reference: without digest, tag, registry host or Docker
/// Hub's `library/`, following the reference grammar of distribution/reference.
/// An image reference without registry host, tag, digest and Docker Hub's `library/`:
/// `docker.io/library/busybox:1.36` → `busybox`, `r.deso.tech/whoami/whoami` → `whoami/whoami`.
pub fn repository(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(name, _digest)| name);
    // A ':' after the last '/' starts a tag; one before it is a registry port.
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    // As docker does: the first component is a registry host if it looks like one.
    let name = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => name,
    };
    name.strip_prefix("library/").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(image: &str, expected: Option<Builtin>) {
        assert_eq!(Builtin::from_image(image), expected, "image {image:?}");
    }

    #[test]
    fn maps_tutorial_and_upstream_images() {
        use Builtin::*;
        for (image, expected) in [
            ("berth/whoami", Some(Whoami)),
            ("berth/whoami:latest", Some(Whoami)),
            ("berth/whoami:v1.2", Some(Whoami)),
            ("traefik/whoami", Some(Whoami)),
            ("docker.io/traefik/whoami:v1.10", Some(Whoami)),
            ("containous/whoami", Some(Whoami)),
            ("emilevauge/whoami:latest", Some(Whoami)),
            ("r.deso.tech/whoami/whoami", Some(Whoami)),
            ("traefik/whoami@sha256:0123abcd", Some(Whoami)),
            ("localhost:5000/traefik/whoami:v1", Some(Whoami)),
            ("number-crunch:local", Some(NumberCrunch)),
            ("number-crunch", Some(NumberCrunch)),
            ("docker.io/library/number-crunch:local", Some(NumberCrunch)),
            ("localhost:5000/number-crunch", Some(NumberCrunch)),
            ("cloudqubes/number-crunch", Some(NumberCrunch)),
            ("berth/number-crunch:0.1", Some(NumberCrunch)),
            ("nginx:local", None),
            ("whoami", None),
            ("r.deso.tech/library/netshoot", None),
            ("", None),
            (":", None),
            ("@", None),
            ("/", None),
        ] {
            check(image, expected);
        }
    }

    #[test]
    fn names_round_trip() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::from_name(b.name()), Some(b));
            assert_eq!(b.to_string(), b.name());
        }
        assert_eq!(Builtin::from_name("nginx"), None);
    }
}
