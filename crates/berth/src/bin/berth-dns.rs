//! `berth-dns`: the cluster DNS alone (`berth dns` as a program of its own). Built from only
//! the DNS, the kube client and the runtime, its code pages are less than half the
//! multi-call binary's, which is most of the difference in resident memory.

use clap::Parser;

/// berth-dns: the Kubernetes cluster DNS (in place of CoreDNS), answering for the cluster
/// domain from the Services, EndpointSlices and Namespaces of the API server the kubeconfig
/// names, and forwarding other names upstream. The same program as `berth dns`.
#[derive(Debug, Parser)]
#[command(name = "berth-dns", version)]
struct Cli {
    #[command(flatten)]
    args: berth::DnsCmdArgs,
}

fn main() -> std::process::ExitCode {
    berth::init_logging();
    let cli = Cli::parse();
    let result = match berth::dns_runtime() {
        Ok(runtime) => runtime.block_on(berth::dns(cli.args)),
        Err(e) => Err(anyhow::Error::new(e).context("starting the async runtime")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-dns: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
