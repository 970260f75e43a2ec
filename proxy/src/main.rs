//! The `switchyard` binary: parses the command line and hands over to the
//! library.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard::cli::{self, Cli, Command};
use switchyard::{demo, logging, server};
use switchyard_control::protocol::Request;

// pingora allocates ~70 times per request (one of them 64 KiB); mimalloc cut
// a minimal pingora proxy's CPU per request by ~40 % on our machine type.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Admin answers come at once but for a health-gated switch; give those
/// their timeout plus slack.
const ADMIN_WAIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { port } => run_demo(port),
        Command::Run { config } => run(&config),
        Command::Check { config } => cli::check(&config),
        Command::Status { route, admin } => {
            cli::admin(Request::Status { route }, &admin, ADMIN_WAIT)
        }
        Command::Switch {
            route,
            slot,
            timeout,
            force,
            reason,
            admin,
        } => {
            let wait = match humantime::parse_duration(&timeout) {
                Ok(t) => t + ADMIN_WAIT,
                Err(e) => {
                    eprintln!("switchyard: bad --timeout {timeout:?}: {e}; expected e.g. 30s");
                    return ExitCode::from(2);
                }
            };
            let request = Request::Switch {
                route,
                slot,
                timeout: Some(timeout),
                force,
                reason,
            };
            cli::admin(request, &admin, wait)
        }
        Command::Rollback {
            route,
            reason,
            force,
            admin,
        } => cli::admin(
            Request::Rollback {
                route,
                reason,
                force,
            },
            &admin,
            ADMIN_WAIT,
        ),
        Command::Canary {
            route,
            slot,
            percent,
            reason,
            admin,
        } => cli::admin(
            Request::Canary {
                route,
                slot,
                weight: percent,
                reason,
            },
            &admin,
            ADMIN_WAIT,
        ),
        Command::Rollout {
            action,
            route,
            slot,
            reason,
            admin,
        } => cli::admin(
            Request::Rollout {
                action: action.into(),
                route,
                slot,
                reason,
            },
            &admin,
            ADMIN_WAIT,
        ),
        Command::History {
            route,
            limit,
            admin,
        } => cli::admin(
            Request::History {
                route,
                limit: Some(limit),
            },
            &admin,
            ADMIN_WAIT,
        ),
        Command::Reload { admin } => cli::admin(Request::Reload {}, &admin, ADMIN_WAIT),
        Command::Drain {
            route,
            slot,
            wait,
            timeout,
            admin,
        } => {
            let waited = match humantime::parse_duration(&timeout) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("switchyard: bad --timeout {timeout:?}: {e}; expected e.g. 60s");
                    return ExitCode::from(2);
                }
            };
            let request = Request::Drain {
                route,
                slot,
                wait,
                timeout: wait.then_some(timeout),
            };
            cli::admin(request, &admin, waited + ADMIN_WAIT)
        }
    }
}

fn run(config_path: &Path) -> ExitCode {
    // The config says how to log; its own errors go to stderr as they are.
    let config = match switchyard_conf::load(config_path) {
        Ok(config) => {
            logging::init(config.server.log_format);
            config
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "switchyard: {} has {} error(s); not starting",
                config_path.display(),
                errors.0.len()
            );
            return ExitCode::from(1);
        }
    };
    let runtime = match server::control_runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match server::start(config, config_path).await {
            Ok(mut running) => {
                let stop = running.until_stopped().await;
                running.stop().await;
                exit_code(&stop)
            }
            Err(e) => {
                eprintln!("switchyard: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// 0 after a signal; 70 (`EX_SOFTWARE`) when the control plane died, so
/// that systemd's `Restart=on-failure` starts switchyard again.
fn exit_code(stop: &server::Stop) -> ExitCode {
    match stop {
        server::Stop::Signal => ExitCode::SUCCESS,
        server::Stop::ControlPlane(_) => ExitCode::from(70),
    }
}

fn run_demo(port: u16) -> ExitCode {
    logging::init(switchyard_conf::LogFormat::default());
    let dir = match tempfile::Builder::new()
        .prefix("switchyard-demo-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("switchyard: cannot create a temporary directory: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match server::control_runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let result: Result<(), String> = async {
            let blue = demo::start_backend("blue")
                .await
                .map_err(|e| e.to_string())?;
            let green = demo::start_backend("green")
                .await
                .map_err(|e| e.to_string())?;
            let port = demo::free_port_from(port);
            let path =
                demo::write_config(dir.path(), port, blue, green).map_err(|e| e.to_string())?;
            let config = switchyard_conf::load(&path).map_err(|e| e.to_string())?;
            let socket = config.server.admin_socket.clone();
            let mut running = server::start(config, &path)
                .await
                .map_err(|e| e.to_string())?;
            let url = format!("http://{}", running.listen_addrs[0]);
            println!("{}", demo::instructions(&url, &path, &socket));
            let stop = running.until_stopped().await;
            running.stop().await;
            match stop {
                server::Stop::Signal => Ok(()),
                server::Stop::ControlPlane(stopped) => Err(stopped.to_string()),
            }
        }
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard demo: {e}");
                ExitCode::from(1)
            }
        }
    })
}
