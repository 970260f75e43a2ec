//! The admin socket and the CLI's exit codes, against the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard_tests::*;

fn exchange(stream: &mut UnixStream, line: &[u8]) -> serde_json::Value {
    stream.write_all(line).unwrap();
    let mut answer = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut answer)
        .unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("not JSON ({e}): {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_server_keeps_going() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));
    let mode = std::fs::metadata(&proxy.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the admin socket is private");

    let mut stream = UnixStream::connect(&proxy.socket).unwrap();
    let bad_json = exchange(&mut stream, b"{not json\n");
    assert_eq!(bad_json["ok"], false);
    assert_eq!(bad_json["error"]["kind"], "bad_request");
    assert!(bad_json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    let unknown = exchange(&mut stream, b"{\"cmd\":\"explode\"}\n");
    assert_eq!(unknown["error"]["kind"], "bad_request");
    assert!(unknown["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown command"));

    let no_route = exchange(
        &mut stream,
        b"{\"cmd\":\"switch\",\"route\":\"nope\",\"slot\":\"green\"}\n",
    );
    assert_eq!(no_route["error"]["kind"], "not_found");

    // The same connection still works after the errors.
    let status = exchange(&mut stream, b"{\"cmd\":\"status\"}\n");
    assert_eq!(status["ok"], true);
    assert_eq!(status["result"]["routes"][0]["active"], "blue");

    let mut stream = UnixStream::connect(&proxy.socket).unwrap();
    let oversized = vec![b'x'; 70 * 1024];
    let _ = stream.write_all(&oversized);
    let mut answer = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut answer)
        .unwrap();
    let too_large: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(too_large["error"]["kind"], "too_large");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);

    // And new connections are still served.
    let mut stream = UnixStream::connect(&proxy.socket).unwrap();
    assert_eq!(exchange(&mut stream, b"{\"cmd\":\"status\"}\n")["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_outside_the_allowlist_is_refused() {
    // Acting as another uid needs root; the project's machines and CI run
    // the tests as root.
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test must run as root to connect as another uid"
    );
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));
    // Let uid 65534 reach the socket file, so the server's SO_PEERCRED check
    // is what refuses it — not the file mode.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&proxy.socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let out = std::process::Command::new(switchyard_bin())
        .args(["status", "--socket"])
        .arg(&proxy.socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uid 65534 may not use the admin socket"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_say_done_refused_or_unreachable() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));

    let done = proxy.cli(&["switch", "app", "green"]);
    assert_eq!(done.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&done.stdout).contains("now active green"));

    let refused = proxy.cli(&["canary", "app", "green", "10"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a canary on the active slot is refused"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("active slot"));

    let unknown_slot = proxy.cli(&["switch", "app", "purple"]);
    assert_eq!(unknown_slot.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown_slot.stderr).contains("blue, green"));

    let json = proxy.cli(&["rollback", "app", "--json"]);
    assert_eq!(json.status.code(), Some(0));
    let response: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(response["result"]["active"], "blue");

    let usage = proxy.cli(&["canary", "app", "green", "101"]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "a percent over 100 is a usage error"
    );

    let nobody = std::process::Command::new(switchyard_bin())
        .args(["status", "--socket"])
        .arg(dir.path().join("no-such.sock"))
        .output()
        .unwrap();
    assert_eq!(nobody.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("is switchyard running"));
}

/// Runs `command`, killing it if it has not exited within `limit`; the
/// output, and how long it took.
fn output_within(
    mut command: std::process::Command,
    limit: Duration,
) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the switchyard CLI");
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the CLI did not answer within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_admin_connections_do_not_lock_the_cli_out() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));

    // Far more connections than the server serves at once (64), opened
    // and left silent.
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&proxy.socket).unwrap())
        .collect();
    let mut command = std::process::Command::new(switchyard_bin());
    command.args(["status", "--socket"]).arg(&proxy.socket);
    let (out, took) = output_within(command, Duration::from_secs(2));
    assert_eq!(
        out.status.code(),
        Some(0),
        "status answered after {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("route app"));
    drop(idle);
}

/// A pipe whose ends are closed on exec (so no other child inherits them),
/// holding at most `capacity` bytes: (read end, write end).
fn small_pipe(capacity: i32) -> (std::fs::File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ only resizes the pipe's buffer.
    let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, capacity) };
    assert!(set >= capacity, "cannot resize the pipe");
    (std::fs::File::from(read), write)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exits_quietly_when_its_reader_is_gone() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    // Many routes: `status` prints far more than the pipe holds, so it is
    // still writing when the reader goes away.
    let routes: String = (0..60)
        .map(|n| {
            two_slot_route(&format!("app{n}"), "blue", &blue, &green).replacen(
                "active =",
                &format!("hosts = [\"app{n}.example\"]\nactive ="),
                1,
            )
        })
        .collect();
    let proxy = Proxy::start(dir.path(), &routes);

    for args in [&["status"][..], &["status", "--json"]] {
        // `switchyard status | head -1`.
        let (mut reader, writer) = small_pipe(4096);
        let mut child = std::process::Command::new(switchyard_bin())
            .args(args)
            .arg("--socket")
            .arg(&proxy.socket)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the switchyard CLI");
        // The first line, or the first 200 bytes of the one long JSON line.
        let mut first_line = Vec::new();
        let mut byte = [0u8; 1];
        while first_line.len() < 200 && reader.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            first_line.push(byte[0]);
        }
        drop(reader);
        let first_line = String::from_utf8_lossy(&first_line).into_owned();
        assert!(
            first_line.starts_with("generation") || first_line.starts_with("{\"ok\":true"),
            "{args:?}: {first_line}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{args:?} never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {stderr}");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: the command was done; only its output was cut: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_file_temporaries_a_crash_left_are_removed_at_start() {
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    // What a crash between the temp file's write and its rename leaves,
    // next to a file of someone else's that only looks similar.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join(".state.json.Xy12Ab.tmp"), "{\"half").unwrap();
    std::fs::write(state.join("notes.tmp"), "mine").unwrap();
    let proxy = Proxy::start(dir.path(), &two_slot_route("app", "blue", &blue, &green));
    proxy.cli_ok(&["switch", "app", "green", "--force"]);

    assert!(!state.join(".state.json.Xy12Ab.tmp").exists());
    assert!(
        state.join("notes.tmp").exists(),
        "only our own temporaries go"
    );
    assert!(state.join("state.json").exists());
}
