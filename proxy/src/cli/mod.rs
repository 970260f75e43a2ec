//! The `switchyard` command line: the server commands (`run`, `demo`,
//! `check`) and the admin commands, which talk to a running server over its
//! admin socket.
//!
//! Exit codes: 0 done, 1 refused or failed (with the reason), 2 usage or
//! connection error, or a reply this CLI cannot read (printed raw).
//!
//! Output goes through a locked stdout with `writeln!`, never `println!`
//! (which panics when stdout is gone): when the reader closes the pipe
//! (`switchyard status | head -1`), printing stops quietly and the exit code
//! is the command's own. SIGPIPE stays ignored (the Rust default) in every
//! subcommand, so the admin client's own socket writes are never killed by
//! it either.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchyard_control::protocol::Request;

use crate::admin_client;

mod print;

/// Where the admin socket is when nothing else says.
const DEFAULT_SOCKET: &str = "/run/switchyard/admin.sock";

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "A front-door reverse proxy for blue/green and canary deployments"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy with two built-in demo backends and print what to try.
    Demo {
        /// Port to listen on; the next free one is taken when it is busy.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Run the proxy.
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 when valid, 1 with every error when not.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Read a password (one line on standard input) and print an argon2id
    /// hash of it for `basic_auth` in `[route.access]`.
    HashPassword,
    /// Show routes, their slots, and what decided them.
    Status {
        route: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make SLOT the active slot of ROUTE.
    Switch {
        route: String,
        slot: String,
        /// How long to wait for the slot to become healthy.
        #[arg(long, default_value = "30s")]
        timeout: String,
        /// Switch even to a slot that is not healthy.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
        /// Start no guard window after this switch.
        #[arg(long)]
        no_guard: bool,
        /// With [cluster] while etcd is unreachable: apply on this node
        /// alone (an emergency; recorded, offered to etcd when it returns).
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Put ROUTE in maintenance (503 with a page; previews and overrides
    /// still reach the slots) or take it out.
    Maintenance {
        route: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[arg(long)]
        reason: Option<String>,
        /// With [cluster] while etcd is unreachable: apply on this node
        /// alone (an emergency; recorded, offered to etcd when it returns).
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// End ROUTE's guard window now, as passed.
    Confirm {
        route: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the previous slot of ROUTE active again.
    Rollback {
        route: String,
        #[arg(long)]
        reason: Option<String>,
        /// Roll back even to a previous slot known unhealthy.
        #[arg(long)]
        force: bool,
        /// With [cluster] while etcd is unreachable: apply on this node
        /// alone (an emergency; recorded, offered to etcd when it returns).
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Send PERCENT of ROUTE's new traffic to SLOT (0 ends the canary).
    Canary {
        route: String,
        slot: String,
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
        #[arg(long)]
        reason: Option<String>,
        /// With [cluster] while etcd is unreachable: apply on this node
        /// alone (an emergency; recorded, offered to etcd when it returns).
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run ROUTE's [route.rollout] steps for SLOT: start, pause (the hold
    /// clock stops, analysis goes on), resume, promote (SLOT becomes active
    /// now) or abort (canary weight 0, active unchanged).
    Rollout {
        #[arg(value_enum)]
        action: RolloutVerb,
        route: String,
        /// The slot to roll out; `start` needs it.
        slot: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the newest changes, oldest first.
    History {
        route: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Re-read the config file now.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show what is still in flight on SLOT of ROUTE; with --wait, return
    /// once nothing is (exit 0), or exit 1 at --timeout: a deploy script
    /// knows when it may stop the old version.
    Drain {
        route: String,
        slot: String,
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s")]
        timeout: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum RolloutVerb {
    Start,
    Pause,
    Resume,
    Promote,
    Abort,
}

impl From<RolloutVerb> for switchyard_control::protocol::RolloutAction {
    fn from(verb: RolloutVerb) -> Self {
        use switchyard_control::protocol::RolloutAction as A;
        match verb {
            RolloutVerb::Start => A::Start,
            RolloutVerb::Pause => A::Pause,
            RolloutVerb::Resume => A::Resume,
            RolloutVerb::Promote => A::Promote,
            RolloutVerb::Abort => A::Abort,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// The admin socket (default: the config's `server.admin_socket`, else
    /// /run/switchyard/admin.sock).
    #[arg(long, env = "SWITCHYARD_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Read the admin socket's path from this config file.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the server's JSON response.
    #[arg(long)]
    pub json: bool,
}

impl AdminArgs {
    fn socket_path(&self) -> Result<PathBuf, String> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        if let Some(config) = &self.config {
            return switchyard_conf::load(config)
                .map(|c| c.server.admin_socket)
                .map_err(|e| {
                    format!(
                        "cannot read the admin socket from {}:\n{e}",
                        config.display()
                    )
                });
        }
        Ok(PathBuf::from(DEFAULT_SOCKET))
    }
}

/// Runs an admin command and prints its outcome.
pub fn admin(request: Request, args: &AdminArgs, wait: Duration) -> ExitCode {
    let socket = match args.socket_path() {
        Ok(socket) => socket,
        Err(message) => {
            eprintln!("switchyard: {message}");
            return ExitCode::from(2);
        }
    };
    let response = match admin_client::send(&socket, &request, wait) {
        Ok(response) => response,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    let mut code = if response.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    let mut out = io::stdout().lock();
    let printed = if args.json {
        out.write_all(response.to_line().as_bytes())
    } else {
        print::human(&mut out, &request, &response).map(|outcome| {
            if outcome == print::Outcome::Unreadable {
                code = ExitCode::from(2);
            }
        })
    };
    finish_output(printed.and_then(|()| out.flush()), code)
}

/// The exit code once the output is written (or not): a reader that closed
/// the pipe early has seen what it wanted, so the command's own `code`
/// stands; any other write error (a full disk) is a failure, said on stderr.
fn finish_output(printed: io::Result<()>, code: ExitCode) -> ExitCode {
    match printed {
        Ok(()) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("switchyard: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

/// `switchyard check`: the config, and the certificate files it names.
/// `switchyard hash-password`: one line of standard input (without its
/// line end) → its argon2id hash on standard output.
pub fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = io::stdin().read_line(&mut line) {
        eprintln!("switchyard: cannot read the password: {e}");
        return ExitCode::from(1);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("switchyard: give the password on standard input, e.g. `switchyard hash-password < file`");
        return ExitCode::from(2);
    }
    match crate::dataplane::basic_auth::hash_password(password.as_bytes()) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::from(1)
        }
    }
}

/// Looks up the config's backend names, as a start would: one that does
/// not resolve is an error at its place.
fn resolve_names(
    mut config: switchyard_conf::Config,
) -> Result<switchyard_conf::Config, switchyard_conf::ConfigErrors> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            switchyard_conf::ConfigErrors(vec![switchyard_conf::ConfigError {
                file: config.source.clone(),
                line: 0,
                column: 0,
                message: format!("cannot start a runtime to resolve backend names: {e}"),
            }])
        })?;
    match runtime.block_on(switchyard_control::names::resolve_config(&mut config)) {
        (_, None) => Ok(config),
        (_, Some(errors)) => Err(errors),
    }
}

pub fn check(path: &Path) -> ExitCode {
    match switchyard_conf::load(path).and_then(resolve_names) {
        Ok(config) => {
            // The certificate files too: a start would refuse them.
            if let Some(tls) = &config.tls {
                if let Err(e) = crate::tls::CertStore::load(&tls.certificates) {
                    eprintln!("[tls]: {e}");
                    eprintln!("{}: 1 error(s)", path.display());
                    return ExitCode::from(1);
                }
            }
            let mut out = io::stdout().lock();
            let printed = writeln!(
                out,
                "{}: {}",
                path.display(),
                switchyard_conf::summary(&config)
            );
            finish_output(printed.and_then(|()| out.flush()), ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::from(1)
        }
    }
}
