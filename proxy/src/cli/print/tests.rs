//! The human output against what the CLI printed before it read typed
//! replies: each `expected/*.txt` is the stdout of the previous CLI (commit
//! a00dbd0) for the reply of the same name in the protocol's samples.

use switchyard_control::protocol::{Request, Response, RolloutAction};

use super::{human, Outcome};

fn status() -> Request {
    Request::Status { route: None }
}

fn drain(wait: bool) -> Request {
    Request::Drain {
        route: "api".into(),
        slot: "two".into(),
        wait,
        timeout: None,
    }
}

fn rollout() -> Request {
    Request::Rollout {
        action: RolloutAction::Start,
        route: "app".into(),
        slot: Some("green".into()),
        reason: None,
    }
}

fn change() -> Request {
    Request::Rollback {
        route: "api".into(),
        reason: None,
        force: false,
        local: false,
    }
}

fn print(request: &Request, line: &str) -> (Outcome, String) {
    let response: Response = serde_json::from_str(line).unwrap();
    let mut out = Vec::new();
    let outcome = human(&mut out, request, &response).unwrap();
    (outcome, String::from_utf8(out).unwrap())
}

#[test]
fn prints_what_the_untyped_cli_printed() {
    macro_rules! case {
        ($name:literal, $request:expr) => {
            (
                $name,
                $request,
                include_str!(concat!(
                    "../../../../control/src/protocol/samples/",
                    $name,
                    ".json"
                )),
                include_str!(concat!("../expected/", $name, ".txt")),
            )
        };
    }
    let cases = [
        case!("status", status()),
        case!("status-failback", status()),
        case!("status-rollout", status()),
        case!("status-config-error", status()),
        case!(
            "history-all",
            Request::History {
                route: None,
                limit: None
            }
        ),
        case!("rollout-start", rollout()),
        case!("rollout-abort", rollout()),
        case!("switch-nochange", change()),
        case!("canary", change()),
        case!("reload-needs-restart", Request::Reload {}),
        case!("drain", drain(true)),
        case!("drain-serving", drain(false)),
    ];
    for (name, request, line, expected) in cases {
        let (outcome, printed) = print(&request, line);
        assert_eq!(outcome, Outcome::Printed, "{name}");
        assert_eq!(printed, expected, "{name}");
    }
}

#[test]
fn busy_slots_and_untracked_backends_print_as_before() {
    let (_, printed) = print(
        &drain(true),
        r#"{"ok":true,"result":{"in_flight":3,"route":"api","serving":true,"slot":"two","upgraded":2}}"#,
    );
    assert_eq!(
        printed,
        "api/two: 3 requests and 2 upgraded connections in flight (still serving new traffic)\n"
    );
    let line = r#"{"ok":true,"result":{"config":{"error":null,"file":"s.toml","needs_restart":[],"pending_edit":null,"reloads":0},"generation":2,"routes":[{"active":"one","canary":null,"changed_at":"2026-12-01T17:45:47Z","critical":null,"decided_by":"config","failed":null,"hosts":[],"name":"api","path_prefix":"/api","pending":null,"previous":null,"rollout":null,"slots":[{"backends":[{"address":"127.0.0.1:18099","state":"unknown"},{"address":"127.0.0.1:18098","last_check":null,"since":"2026-12-01T17:45:48Z","state":"unknown"}],"health":"unknown","in_flight":4,"name":"one","upgraded":2}]}],"state_warnings":[],"tls":null}}"#;
    let (_, printed) = print(&status(), line);
    assert_eq!(
        printed,
        "generation 2  config s.toml\n\
         \n\
         route api  hosts *  path /api\n\
         \x20 active one  (decided by config at 2026-12-01T17:45:47Z)\n\
         \x20 slot one          unknown   4 in flight, 2 upgraded\n\
         \x20   127.0.0.1:18099       unknown\n\
         \x20   127.0.0.1:18098       unknown since 2026-12-01T17:45:48Z\n"
    );
}

#[test]
fn a_reply_of_another_shape_is_printed_raw_not_a_panic() {
    for (request, line) in [
        (
            drain(false),
            r#"{"ok":true,"result":{"route":"api","slot":"two"}}"#,
        ),
        (status(), r#"{"ok":true,"result":{"generation":"x"}}"#),
        (status(), r#"{"ok":true}"#),
        (change(), r#"{"ok":true,"result":[1,2,3]}"#),
    ] {
        let (outcome, printed) = print(&request, line);
        assert_eq!(outcome, Outcome::Unreadable, "{line}");
        let raw: serde_json::Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(
            raw,
            serde_json::from_str::<serde_json::Value>(line).unwrap()
        );
    }
}

#[test]
fn a_refusal_prints_nothing_on_stdout() {
    let line = include_str!("../../../../control/src/protocol/samples/nosuchroute.json");
    let (outcome, printed) = print(&status(), line);
    assert_eq!((outcome, printed.as_str()), (Outcome::Printed, ""));
}
