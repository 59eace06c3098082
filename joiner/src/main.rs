//! The `recjoin` command.

use clap::Parser;

/// recjoin: join recommender features and user actions into labelled training samples.
#[derive(Debug, Parser)]
#[command(name = "recjoin", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("no command is implemented yet")
}
