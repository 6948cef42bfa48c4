//! `berth container-init`: the first program of every container. It does in one process
//! what `ip netns exec NS unshare --uts setpriv --pdeathsig KILL sh -c 'hostname ..; exec ..'`
//! did in five: join the pod's network namespace, take mount and UTS namespaces of its own
//! with the pod's /etc/resolv.conf and /etc/hosts bound over the node's (what `ip netns exec`
//! does with /etc/netns/NS/), the container's volumes bound over their mount paths and a fresh
//! /sys, set the pod's hostname, ask to die with the agent, and exec the container's command.

use std::ffi::CString;
use std::path::Path;
use std::process::ExitCode;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// What `berth container-init` is asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct InitArgs {
    pub netns: String,
    pub hostname: String,
    /// Start a session with the terminal on stdin as controlling terminal (`tty: true`).
    pub tty: bool,
    /// Volumes to bind over paths of the node's file system, in this order.
    pub binds: Vec<Bind>,
    pub argv: Vec<String>,
}

/// One volume mount: `source` (a directory or file the agent made) bound over `target`, which
/// must exist on the node; only the container's mount namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

impl InitArgs {
    /// `--netns NS --hostname NAME [--tty] [--bind|--ro-bind SOURCE TARGET]... -- ARGV...`
    pub fn parse(args: &[String]) -> Result<InitArgs, String> {
        let mut it = args.iter();
        let (mut netns, mut hostname, mut tty) = (None, None, false);
        let mut binds = Vec::new();
        loop {
            match it.next().map(String::as_str) {
                Some("--netns") => netns = it.next().cloned(),
                Some("--hostname") => hostname = it.next().cloned(),
                Some("--tty") => tty = true,
                Some(flag @ ("--bind" | "--ro-bind")) => {
                    let (Some(source), Some(target)) = (it.next(), it.next()) else {
                        return Err(format!("{flag} needs a source and a target"));
                    };
                    binds.push(Bind {
                        source: source.clone(),
                        target: target.clone(),
                        read_only: flag == "--ro-bind",
                    });
                }
                Some("--") => break,
                Some(other) => return Err(format!("unexpected argument {other:?}")),
                None => return Err("missing -- and the command".into()),
            }
        }
        let argv: Vec<String> = it.cloned().collect();
        if argv.is_empty() {
            return Err("no command after --".into());
        }
        Ok(InitArgs {
            netns: netns.ok_or("--netns is required")?,
            hostname: hostname.ok_or("--hostname is required")?,
            tty,
            binds,
            argv,
        })
    }

    /// The command line the runtime starts for these arguments.
    pub fn command_line(&self) -> Vec<String> {
        let mut v = vec![
            "container-init".to_owned(),
            "--netns".into(),
            self.netns.clone(),
            "--hostname".into(),
            self.hostname.clone(),
        ];
        if self.tty {
            v.push("--tty".into());
        }
        for b in &self.binds {
            let flag = if b.read_only { "--ro-bind" } else { "--bind" };
            v.extend([flag.to_owned(), b.source.clone(), b.target.clone()]);
        }
        v.push("--".into());
        v.extend(self.argv.iter().cloned());
        v
    }
}

/// Runs `berth container-init ARGS`; returns only on failure (exit 127, as a shell reports a
/// command it could not run), after saying why on stderr (the container's log).
pub fn main_for(args: &[String]) -> ExitCode {
    let result = InitArgs::parse(args).and_then(|a| enter(&a).map(|()| a));
    let args = match result {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth container-init: {e}");
            return ExitCode::from(127);
        }
    };
    let mut argv = args.argv.clone();
    if args.tty {
        // setsid(1) does the TIOCSCTTY ioctl, which would otherwise take unsafe code here.
        argv.splice(0..0, ["setsid".to_owned(), "--ctty".to_owned()]);
    }
    let Ok(cargv) = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    else {
        eprintln!("berth container-init: the command has a NUL byte");
        return ExitCode::from(127);
    };
    let err = nix::unistd::execvp(&cargv[0], &cargv).err();
    eprintln!(
        "berth container-init: cannot run {:?}: {}",
        args.argv[0],
        err.map_or_else(String::new, |e| e.desc().to_owned())
    );
    ExitCode::from(127)
}

fn enter(a: &InitArgs) -> Result<(), String> {
    let path = Path::new("/run/netns").join(&a.netns);
    let ns = std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("joining {}: {e}", a.netns))?;
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
        .map_err(|e| format!("new mount and UTS namespaces: {e}"))?;
    // Mounts made here must not reach the node's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("making / a slave mount: {e}"))?;
    let etc = Path::new("/etc/netns").join(&a.netns);
    for file in ["resolv.conf", "hosts"] {
        let from = etc.join(file);
        if from.exists() {
            let to = Path::new("/etc").join(file);
            mount(
                Some(&from),
                &to,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("binding {} over {}: {e}", from.display(), to.display()))?;
        }
    }
    for b in &a.binds {
        bind(b)?;
    }
    // A /sys that shows the pod's own network devices, as `ip netns exec` gives; best effort,
    // since nothing the pod runs depends on it.
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        let _ = mount(
            Some("sysfs"),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    nix::unistd::sethostname(&a.hostname).map_err(|e| format!("setting the hostname: {e}"))?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("asking to die with the agent: {e}"))?;
    // The agent keeps its own files private (umask 077); a container starts with the usual
    // 022, as container runtimes give it.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    Ok(())
}

/// Binds a volume over its mount path, read-only when asked (a second, remounting call: a
/// bind mount takes MS_RDONLY only on remount).
fn bind(b: &Bind) -> Result<(), String> {
    let fail = |e: nix::Error| format!("binding volume {} over {}: {e}", b.source, b.target);
    mount(
        Some(b.source.as_str()),
        b.target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail)?;
    if b.read_only {
        mount(
            None::<&str>,
            b.target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_round_trip() {
        let a = InitArgs {
            netns: "berth-pod-0123456789ab".into(),
            hostname: "web".into(),
            tty: true,
            binds: vec![
                Bind {
                    source: "/state/pods/u/volumes/conf".into(),
                    target: "/etc/nginx/conf.d".into(),
                    read_only: true,
                },
                Bind {
                    source: "/state/pods/u/volumes/scratch".into(),
                    target: "/tmp".into(),
                    read_only: false,
                },
            ],
            argv: strings(&["sh", "-c", "echo --netns"]),
        };
        let line = a.command_line();
        assert_eq!(line[0], "container-init");
        assert_eq!(InitArgs::parse(&line[1..]), Ok(a));
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &[][..],
            &["--netns", "x", "--hostname", "h", "--"][..],
            &["--hostname", "h", "--", "sh"][..],
            &["--bogus"][..],
            &[
                "--netns",
                "x",
                "--hostname",
                "h",
                "--bind",
                "/a",
                "--",
                "sh",
            ][..],
        ] {
            assert!(InitArgs::parse(&strings(bad)).is_err(), "{bad:?}");
        }
    }
}
