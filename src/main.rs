//! The `timectl` command line. Subcommands hand off to library functions.

use clap::{Parser, Subcommand};
use timectl::engine::cli::{DaemonArgs, StatusArgs, run_daemon, run_status};

#[derive(Parser, Debug)]
#[command(
    name = "timectl",
    version,
    about = "Declarative time synchronisation with an embedded NTP engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded NTP engine (client and server).
    Daemon(DaemonArgs),
    /// Show the running engine's synchronisation state and sources.
    Status(StatusArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Daemon(args) => run_daemon(args),
        Command::Status(args) => run_status(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("timectl: {e:#}");
            std::process::exit(1);
        }
    }
}
