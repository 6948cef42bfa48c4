//! `berth workload <whoami|number-crunch> [--port N]`: the process entry the binary's hidden
//! subcommand hands its arguments to. Owns the runtime and SIGTERM, as a container's PID 1 would.

use std::error::Error as _;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::{Builtin, Error, Result, serve_listener};

const USAGE: &str = "usage: berth workload <whoami|number-crunch> [--port N]";

/// What the arguments ask for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Help,
    Run { builtin: Builtin, port: u16 },
}

/// Runs the workload the arguments name until SIGTERM or SIGINT, then stops gracefully.
///
/// `args` are the words after `workload`: a workload name, then optionally a port as
/// `--port N`, `--port=N`, or Go's single-dash `-port N` (the form traefik/whoami manifests
/// pass as container args). Without one, whoami honours upstream's `WHOAMI_PORT_NUMBER`, then
/// each program uses its upstream port ([`Builtin::default_port`]). Listens on all addresses,
/// IPv6 and IPv4 where the namespace has IPv6, IPv4 only otherwise.
///
/// Exit codes: 0 after a clean stop or `--help`, 2 for bad arguments, 1 if serving fails.
pub fn main_for(args: &[String]) -> ExitCode {
    let whoami_port = std::env::var("WHOAMI_PORT_NUMBER").ok();
    match parse(args, whoami_port.as_deref()) {
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Parsed::Run { builtin, port }) => match run(builtin, port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("berth workload {builtin}: {}", chain(&error));
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("berth workload: {}\n{USAGE}", chain(&error));
            ExitCode::from(2)
        }
    }
}

fn parse(args: &[String], whoami_port: Option<&str>) -> Result<Parsed> {
    let mut builtin = None;
    let mut port = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" | "-help" => return Ok(Parsed::Help),
            "--port" | "-port" => {
                let value = args
                    .next()
                    .ok_or_else(|| Error::MissingValue(arg.clone()))?;
                port = Some(parse_port(value)?);
            }
            _ => {
                if let Some(value) = arg.strip_prefix("--port=").or(arg.strip_prefix("-port=")) {
                    port = Some(parse_port(value)?);
                } else if builtin.is_none() && !arg.starts_with('-') {
                    let named = Builtin::from_name(arg);
                    builtin = Some(named.ok_or_else(|| Error::UnknownWorkload(arg.clone()))?);
                } else {
                    return Err(Error::UnexpectedArgument(arg.clone()));
                }
            }
        }
    }
    let builtin = builtin.ok_or(Error::MissingWorkload)?;
    let port = match (port, builtin, whoami_port) {
        (Some(port), _, _) => port,
        (None, Builtin::Whoami, Some(value)) if !value.is_empty() => parse_port(value)?,
        (None, _, _) => builtin.default_port(),
    };
    Ok(Parsed::Run { builtin, port })
}

fn parse_port(value: &str) -> Result<u16> {
    value.parse().map_err(|source| Error::InvalidPort {
        value: value.to_owned(),
        source,
    })
}

fn run(builtin: Builtin, port: u16) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let listener = bind_any(port).await?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        serve_listener(builtin, listener, shutdown).await
    })
}

/// Binds every address on `port`: `[::]` (dual-stack under Linux's default `bindv6only=0`,
/// like Go's `:port`), falling back to `0.0.0.0` in a namespace without IPv6.
async fn bind_any(port: u16) -> Result<TcpListener> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match TcpListener::bind(v6).await {
        Ok(listener) => Ok(listener),
        // The port itself is the problem; IPv4 would fail the same way.
        Err(source)
            if matches!(
                source.kind(),
                ErrorKind::AddrInUse | ErrorKind::PermissionDenied
            ) =>
        {
            Err(Error::Bind { addr: v6, source })
        }
        Err(error) => {
            tracing::debug!(%error, "no IPv6 here; listening on IPv4 only");
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            TcpListener::bind(v4)
                .await
                .map_err(|source| Error::Bind { addr: v4, source })
        }
    }
}

/// An error and its causes on one line, as the binary prints anyhow chains.
fn chain(error: &Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], whoami_port: Option<&str>, expected: &str) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let got = match parse(&args, whoami_port) {
            Ok(Parsed::Help) => "help".to_owned(),
            Ok(Parsed::Run { builtin, port }) => format!("{builtin} {port}"),
            Err(error) => format!("error: {}", chain(&error)),
        };
        assert_eq!(got, expected, "args {args:?}");
    }

    #[test]
    fn parses_names_ports_and_mistakes() {
        for (args, env, expected) in [
            (&["whoami"][..], None, "whoami 80"),
            (&["number-crunch"], None, "number-crunch 8080"),
            (&["whoami", "--port", "8081"], None, "whoami 8081"),
            (
                &["--port=9000", "number-crunch"],
                None,
                "number-crunch 9000",
            ),
            (&["whoami", "-port", "7"], None, "whoami 7"),
            (&["whoami", "-port=8"], Some("9"), "whoami 8"),
            (&["whoami"], Some("9090"), "whoami 9090"),
            (&["whoami"], Some(""), "whoami 80"),
            (&["number-crunch"], Some("9090"), "number-crunch 8080"),
            (&["whoami", "--help"], None, "help"),
            (
                &[],
                None,
                "error: no workload named; expected one of: whoami, number-crunch",
            ),
            (
                &["nginx"],
                None,
                "error: unknown workload \"nginx\"; expected one of: whoami, number-crunch",
            ),
            (
                &["whoami", "--port"],
                None,
                "error: flag --port needs a value",
            ),
            (
                &["whoami", "--port", "http"],
                None,
                "error: invalid port \"http\": invalid digit found in string",
            ),
            (
                &["whoami", "--port=70000"],
                None,
                "error: invalid port \"70000\": number too large to fit in target type",
            ),
            (
                &["whoami"],
                Some("x"),
                "error: invalid port \"x\": invalid digit found in string",
            ),
            (
                &["whoami", "--verbose"],
                None,
                "error: unexpected argument \"--verbose\"",
            ),
            (
                &["whoami", "number-crunch"],
                None,
                "error: unexpected argument \"number-crunch\"",
            ),
        ] {
            check(args, env, expected);
        }
    }
}
