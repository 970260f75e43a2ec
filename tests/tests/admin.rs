//! The admin socket and the CLI's exit codes, against the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;

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
