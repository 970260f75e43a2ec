//! The `switchyard` command line: the server commands (`run`, `demo`,
//! `check`) and the admin commands, which talk to a running server over its
//! admin socket.
//!
//! Exit codes: 0 done, 1 refused or failed (with the reason), 2 usage or
//! connection error.
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
use serde_json::Value;
use switchyard_control::protocol::{Request, Response};

use crate::admin_client;

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
    let code = if response.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    let mut out = io::stdout().lock();
    let printed = if args.json {
        out.write_all(response.to_line().as_bytes())
    } else {
        print_human(&mut out, &request, &response)
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

fn print_human(out: &mut impl Write, request: &Request, response: &Response) -> io::Result<()> {
    if let Some(error) = &response.error {
        let kind = serde_json::to_value(error.kind).unwrap_or(Value::Null);
        eprintln!("switchyard: refused ({}): {}", text(&kind), error.message);
        return Ok(());
    }
    let result = response.result.clone().unwrap_or(Value::Null);
    let printed = print_result(out, request, &result);
    // Said on stderr even when stdout is gone.
    if let Some(warning) = result["warning"].as_str() {
        eprintln!("warning: {warning}");
    }
    printed
}

fn print_result(out: &mut impl Write, request: &Request, result: &Value) -> io::Result<()> {
    match request {
        Request::Status { .. } => print_status(out, result)?,
        Request::History { .. } => print_history(out, result)?,
        Request::Drain { wait, .. } => {
            let state = if *wait && result["in_flight"] == 0 && result["upgraded"] == 0 {
                "drained: "
            } else {
                ""
            };
            writeln!(
                out,
                "{}/{}: {state}{} requests and {} upgraded connections in flight{}",
                text(&result["route"]),
                text(&result["slot"]),
                result["in_flight"],
                result["upgraded"],
                if result["serving"] == Value::Bool(true) {
                    " (still serving new traffic)"
                } else {
                    ""
                }
            )?;
        }
        Request::Rollout { .. } => {
            writeln!(
                out,
                "{}: active {}; {}",
                text(&result["route"]),
                text(&result["active"]),
                describe_rollout(&result["rollout"])
            )?;
        }
        Request::Reload {} => {
            writeln!(
                out,
                "reloaded: generation {}, {} routes",
                result["generation"], result["routes"]
            )?;
            if let Some(list) = result["needs_restart"].as_array().filter(|l| !l.is_empty()) {
                let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                writeln!(out, "needs restart to apply: {}", names.join(", "))?;
            }
        }
        _ => {
            let canary = match &result["canary"] {
                Value::Null => String::new(),
                c => format!(", canary {} at {}%", text(&c["slot"]), c["weight"]),
            };
            let verb = if result["changed"] == Value::Bool(true) {
                "now"
            } else {
                "unchanged:"
            };
            writeln!(
                out,
                "{}: {verb} active {}{canary} (generation {})",
                text(&result["route"]),
                text(&result["active"]),
                result["generation"]
            )?;
        }
    }
    Ok(())
}

/// `rollout of green: running, step 2/3 at 50 %, 12.3s left; verdict pass (...)`.
fn describe_rollout(rollout: &Value) -> String {
    if rollout.is_null() {
        return "no rollout".into();
    }
    let mut line = format!(
        "rollout of {}: {}, step {}/{} at {} %",
        text(&rollout["slot"]),
        text(&rollout["phase"]),
        rollout["step_number"],
        rollout["steps_total"],
        rollout["weight"]
    );
    if let Some(left) = rollout["hold_left_ms"]
        .as_u64()
        .filter(|_| rollout["outcome"].is_null())
    {
        line.push_str(&format!(", {:.1}s left", left as f64 / 1000.0));
    }
    if let Some(outcome) = rollout["outcome"].as_str() {
        line.push_str(&format!(" — {outcome}"));
    }
    if !rollout["verdict"].is_null() {
        line.push_str(&format!(
            "; verdict {} ({})",
            text(&rollout["verdict"]["result"]),
            text(&rollout["verdict"]["reason"])
        ));
    }
    line
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

fn print_status(out: &mut impl Write, status: &Value) -> io::Result<()> {
    writeln!(
        out,
        "generation {}  config {}",
        status["generation"],
        text(&status["config"]["file"])
    )?;
    if let Some(error) = status["config"]["error"].as_str() {
        writeln!(
            out,
            "CONFIG REJECTED (running the last good config):\n{error}"
        )?;
    }
    if let Some(list) = status["config"]["needs_restart"]
        .as_array()
        .filter(|l| !l.is_empty())
    {
        let names: Vec<String> = list.iter().map(text).collect();
        writeln!(out, "needs restart to apply: {}", names.join(", "))?;
    }
    for warning in status["state_warnings"].as_array().into_iter().flatten() {
        writeln!(out, "state file: {}", text(warning))?;
    }
    for route in status["routes"].as_array().into_iter().flatten() {
        let hosts: Vec<String> = route["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let hosts = if hosts.is_empty() {
            "*".to_string()
        } else {
            hosts.join(",")
        };
        writeln!(out)?;
        writeln!(
            out,
            "route {}  hosts {hosts}  path {}",
            text(&route["name"]),
            text(&route["path_prefix"])
        )?;
        writeln!(
            out,
            "  active {}  (decided by {} at {})",
            text(&route["active"]),
            text(&route["decided_by"]),
            text(&route["changed_at"])
        )?;
        if let Some(previous) = route["previous"].as_str() {
            writeln!(out, "  previous {previous}")?;
        }
        if let Value::Object(_) = &route["canary"] {
            writeln!(
                out,
                "  canary {} at {}%",
                text(&route["canary"]["slot"]),
                route["canary"]["weight"]
            )?;
        }
        if !route["rollout"].is_null() {
            writeln!(out, "  {}", describe_rollout(&route["rollout"]))?;
        }
        if let Some(critical) = route["critical"].as_str() {
            writeln!(out, "  CRITICAL: {critical}")?;
        }
        if let Some(pending) = route["pending"].as_str() {
            writeln!(
                out,
                "  pending switch to {pending} (applied once it is healthy)"
            )?;
        }
        if let Some(failed) = route["failed"].as_str() {
            writeln!(
                out,
                "  {failed} failed and was left; only a switch brings traffic back to it"
            )?;
        }
        for slot in route["slots"].as_array().into_iter().flatten() {
            writeln!(out, "  {}", describe_slot(slot))?;
            for backend in slot["backends"].as_array().into_iter().flatten() {
                writeln!(out, "    {}", describe_backend(backend))?;
            }
        }
    }
    if let Value::Object(_) = &status["tls"] {
        writeln!(out)?;
        print_tls(out, &status["tls"])?;
    }
    Ok(())
}

/// `slot green  healthy  3 in flight, 1 upgraded`.
fn describe_slot(slot: &Value) -> String {
    let mut line = format!(
        "slot {:<12} {:<9}",
        text(&slot["name"]),
        text(&slot["health"])
    );
    line.push_str(&format!(" {} in flight", slot["in_flight"]));
    if slot["upgraded"].as_u64().is_some_and(|n| n > 0) {
        line.push_str(&format!(", {} upgraded", slot["upgraded"]));
    }
    line
}

/// `127.0.0.1:3001  healthy since 2026-…  last check ok 200 in 1.2 ms at 2026-…`.
fn describe_backend(backend: &Value) -> String {
    let mut line = format!(
        "{:<21} {}",
        text(&backend["address"]),
        text(&backend["state"])
    );
    if let Some(since) = backend["since"].as_str() {
        line.push_str(&format!(" since {since}"));
    }
    let check = &backend["last_check"];
    if check.is_object() {
        let verdict = if check["ok"] == true { "ok" } else { "FAILED" };
        let detail = match (check["status"].as_u64(), check["error"].as_str()) {
            (Some(status), _) => status.to_string(),
            (None, Some(error)) => error.to_string(),
            (None, None) => "tcp connect".to_string(),
        };
        let latency = check["latency_ms"].as_f64().unwrap_or_default();
        line.push_str(&format!(
            "  last check {verdict} {detail} in {latency:.1} ms at {}",
            text(&check["at"])
        ));
    }
    line
}

/// The certificates served and the last (re)load.
fn print_tls(out: &mut impl Write, tls: &Value) -> io::Result<()> {
    for cert in tls["certificates"].as_array().into_iter().flatten() {
        let names: Vec<String> = cert["names"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        writeln!(
            out,
            "tls {}{}  names {}  valid until {}",
            text(&cert["cert"]),
            if cert["default"] == true {
                " (default)"
            } else {
                ""
            },
            names.join(","),
            text(&cert["not_after"])
        )?;
    }
    let last = &tls["last_load"];
    if last["result"] == "error" {
        writeln!(
            out,
            "tls CERTIFICATE RELOAD REJECTED at {} (still serving the above): {}",
            text(&last["at"]),
            text(&last["error"])
        )?;
    }
    Ok(())
}

fn print_history(out: &mut impl Write, result: &Value) -> io::Result<()> {
    for entry in result["entries"].as_array().into_iter().flatten() {
        let mut line = format!(
            "{} {:<8} {:<10} {:<8}",
            text(&entry["time"]),
            text(&entry["trigger"]),
            text(&entry["route"]),
            text(&entry["action"])
        );
        if let (Some(from), Some(to)) = (entry["from"].as_str(), entry["to"].as_str()) {
            line.push_str(&format!(" {from} -> {to}"));
        }
        line.push_str(&format!("  {}", text(&entry["result"])));
        if let Some(reason) = entry["reason"].as_str() {
            line.push_str(&format!("  ({reason})"));
        }
        if let Some(uid) = entry["uid"].as_u64() {
            line.push_str(&format!("  uid {uid}"));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `switchyard check`: the config, and the certificate files it names.
pub fn check(path: &Path) -> ExitCode {
    match switchyard_conf::load(path) {
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
