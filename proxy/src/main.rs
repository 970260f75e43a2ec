//! The `switchyard` binary: parses the command line and hands over to the
//! library.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard::cli::{self, AdminArgs, Cli, Command};
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
    match Cli::parse().command {
        Command::Demo { port } => run_demo(port),
        Command::Run { config } => run(&config),
        Command::Check { config } => cli::check(&config),
        Command::HashPassword => cli::hash_password(),
        admin_command => match admin_request(admin_command) {
            Ok((request, admin, wait)) => cli::admin(request, &admin, wait),
            Err(code) => code,
        },
    }
}

/// mimalloc asks for transparent huge pages on its arena, so each thread's
/// first allocations made 2 MiB resident (17 MiB at start, 8 MiB of it huge
/// pages, in a process that uses under 2 MiB of heap): on a VPS, RSS others
/// pay for. Run as a prioritised constructor, before mimalloc's own (which
/// has the default priority) makes its first arena; the kernel then faults
/// the arena in 4 KiB pages: 10 MiB at start. Huge pages save 3–6 % of CPU
/// per request (TLB misses; docs/performance.md), so
/// `SWITCHYARD_HUGE_PAGES=1` keeps them for whoever prefers that.
#[used]
#[unsafe(link_section = ".init_array.00101")]
static WITHOUT_TRANSPARENT_HUGE_PAGES: extern "C" fn() = without_transparent_huge_pages;

extern "C" fn without_transparent_huge_pages() {
    // Before main: no Rust runtime to lean on, so libc's getenv.
    // SAFETY: a NUL-terminated name; nothing sets the environment yet.
    let keep = unsafe { libc::getenv(c"SWITCHYARD_HUGE_PAGES".as_ptr()) };
    // SAFETY: getenv's result is NULL or a NUL-terminated string.
    if !keep.is_null() && unsafe { std::ffi::CStr::from_ptr(keep) }.to_bytes() == b"1" {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no
    // memory of ours; a kernel without it returns an error we ignore.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// An admin command as its request, the socket to send it to and how long
/// to wait for the answer; exit 2 for a bad `--timeout`.
fn admin_request(command: Command) -> Result<(Request, AdminArgs, Duration), ExitCode> {
    let parse_timeout = |timeout: &str, example: &str| {
        humantime::parse_duration(timeout).map_err(|e| {
            eprintln!("switchyard: bad --timeout {timeout:?}: {e}; expected e.g. {example}");
            ExitCode::from(2)
        })
    };
    Ok(match command {
        Command::Switch {
            route,
            slot,
            timeout,
            force,
            reason,
            no_guard,
            local,
            admin,
        } => {
            let wait = parse_timeout(&timeout, "30s")? + ADMIN_WAIT;
            let timeout = Some(timeout);
            let request = Request::Switch {
                route,
                slot,
                timeout,
                force,
                reason,
                no_guard,
                local,
            };
            (request, admin, wait)
        }
        Command::Drain {
            route,
            slot,
            wait,
            timeout,
            admin,
        } => {
            let waited = parse_timeout(&timeout, "60s")? + ADMIN_WAIT;
            let timeout = wait.then_some(timeout);
            let request = Request::Drain {
                route,
                slot,
                wait,
                timeout,
            };
            (request, admin, waited)
        }
        other => {
            let (request, admin) = plain_request(other);
            (request, admin, ADMIN_WAIT)
        }
    })
}

/// An admin command that takes no `--timeout`, as its request.
fn plain_request(command: Command) -> (Request, AdminArgs) {
    match command {
        Command::Demo { .. }
        | Command::Run { .. }
        | Command::Check { .. }
        | Command::HashPassword => {
            unreachable!("main runs these itself")
        }
        Command::Switch { .. } | Command::Drain { .. } => {
            unreachable!("admin_request builds these with their timeouts")
        }
        Command::Status { route, admin } => (Request::Status { route }, admin),
        Command::Rollback {
            route,
            reason,
            force,
            local,
            admin,
        } => {
            let request = Request::Rollback {
                route,
                reason,
                force,
                local,
            };
            (request, admin)
        }
        Command::Canary {
            route,
            slot,
            percent,
            reason,
            local,
            admin,
        } => {
            let weight = percent;
            let request = Request::Canary {
                route,
                slot,
                weight,
                reason,
                local,
            };
            (request, admin)
        }
        Command::Rollout {
            action,
            route,
            slot,
            reason,
            admin,
        } => {
            let action = action.into();
            let request = Request::Rollout {
                action,
                route,
                slot,
                reason,
            };
            (request, admin)
        }
        Command::History {
            route,
            limit,
            admin,
        } => {
            let limit = Some(limit);
            (Request::History { route, limit }, admin)
        }
        Command::Reload { admin } => (Request::Reload {}, admin),
        Command::Confirm {
            route,
            reason,
            admin,
        } => (Request::Confirm { route, reason }, admin),
        Command::Maintenance {
            route,
            state,
            reason,
            local,
            admin,
        } => {
            let on = state == "on";
            let request = Request::Maintenance {
                route,
                on,
                reason,
                local,
            };
            (request, admin)
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
            // Port 0 (the tests): the dashboard takes any free port too.
            let setup = demo::DemoSetup {
                port: demo::free_port_from(port),
                admin_port: if port == 0 {
                    0
                } else {
                    demo::free_port_from(9901)
                },
                token: demo::new_token().map_err(|e| e.to_string())?,
            };
            let path =
                demo::write_config(dir.path(), &setup, blue, green).map_err(|e| e.to_string())?;
            let config = switchyard_conf::load(&path).map_err(|e| e.to_string())?;
            let socket = config.server.admin_socket.clone();
            let mut running = server::start(config, &path)
                .await
                .map_err(|e| e.to_string())?;
            let url = format!("http://{}", running.listen_addrs[0]);
            let dashboard = running.admin_http_addr;
            println!(
                "{}",
                demo::instructions(&url, dashboard, &setup.token, &path, &socket)
            );
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
