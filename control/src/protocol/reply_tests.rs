//! The typed replies against the wire as the server wrote it before they
//! existed: every file in `samples/` is a response line captured from a
//! running `switchyard` (commit a00dbd0, `status --json`, `switch --json`,
//! ...; a config with three routes on loopback backends, TLS, a rollout,
//! a state file that could not be written), and must read into its type
//! and be written back byte for byte.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::*;
use crate::health::{BackendState, Check, Failure, SlotHealth};
use crate::rollout::{Plan, Rollout, Step, Verdict};

fn status() -> Request {
    Request::Status { route: None }
}

fn switch() -> Request {
    Request::Switch {
        route: "api".into(),
        slot: "two".into(),
        timeout: None,
        force: false,
        reason: None,
        no_guard: false,
        local: false,
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

fn drain() -> Request {
    Request::Drain {
        route: "api".into(),
        slot: "two".into(),
        wait: false,
        timeout: None,
    }
}

/// (sample, the request it answers, its line).
fn successes() -> Vec<(&'static str, Request, &'static str)> {
    let canary = Request::Canary {
        route: "api".into(),
        slot: "two".into(),
        weight: 25,
        reason: None,
        local: false,
    };
    let history = Request::History {
        route: None,
        limit: None,
    };
    macro_rules! sample {
        ($name:literal, $request:expr) => {
            (
                $name,
                $request,
                include_str!(concat!("samples/", $name, ".json")),
            )
        };
    }
    vec![
        sample!("status", status()),
        sample!("status-rollout", status()),
        sample!("status-config-error", status()),
        sample!("status-pending", status()),
        sample!("status-failback", status()),
        sample!("switch", switch()),
        sample!("switch-nochange", switch()),
        sample!("switch-warning", switch()),
        sample!("canary", canary),
        sample!("reload-unchanged", Request::Reload {}),
        sample!("reload-needs-restart", Request::Reload {}),
        sample!("reload-applied-warning", Request::Reload {}),
        sample!("drain", drain()),
        sample!("drain-serving", drain()),
        sample!("history-all", history),
        sample!("rollout-start", rollout()),
        sample!("rollout-abort", rollout()),
        sample!("rollout-promote-warning", rollout()),
    ]
}

#[test]
fn every_captured_reply_reads_into_its_type_and_writes_back_byte_for_byte() {
    for (name, request, line) in successes() {
        let response: Response = serde_json::from_str(line).expect(name);
        let result = response.result.clone().expect(name);
        let reply = Reply::parse(&request, result.clone())
            .unwrap_or_else(|e| panic!("{name}: {e}\n{line}"));
        assert_eq!(serde_json::to_value(&reply).unwrap(), result, "{name}");
        assert_eq!(Response::ok_with(&reply).to_line(), line, "{name}");
    }
}

#[test]
fn captured_replies_have_the_fields_the_cli_prints() {
    let line = include_str!("samples/status.json");
    let status: StatusReply = serde_json::from_str::<Response>(line)
        .unwrap()
        .reply()
        .unwrap();
    assert_eq!(status.routes.len(), 3);
    let app = &status.routes[0];
    assert_eq!(app.hosts, ["app.localhost", "*.app.localhost"]);
    let green = &app.slots[1].backends;
    assert_eq!(green[0].state, BackendState::Healthy);
    let check = |b: &BackendStatus| b.tracked.clone().unwrap().last_check.unwrap();
    assert_eq!(
        check(&green[0]).detail,
        CheckDetail::Status { status: Some(200) }
    );
    assert!(matches!(check(&green[1]).detail, CheckDetail::Error { .. }));
    // A TCP probe: `"status": null`, kept as such.
    let api = &status.routes[1];
    assert_eq!(
        check(&api.slots[0].backends[0]).detail,
        CheckDetail::Status { status: None }
    );
    let bad = &status.routes[2];
    assert!(bad.critical.as_deref().unwrap().contains("still routing"));
    assert_eq!(bad.slots[0].health, SlotHealth::Unhealthy);
    assert_eq!(status.tls.unwrap().last_load.result, TlsLoadResult::Ok);

    let line = include_str!("samples/status-failback.json");
    let status: StatusReply = serde_json::from_str::<Response>(line)
        .unwrap()
        .reply()
        .unwrap();
    let tls = status.tls.unwrap();
    assert_eq!(tls.last_load.result, TlsLoadResult::Error);
    assert!(tls.last_load.error.is_some());
    let api = &status.routes[1];
    assert_eq!(api.pending.as_deref(), Some("two"));
    assert_eq!(api.failed.as_deref(), Some("two"));
    let rollout = status.routes[0].rollout.clone().unwrap();
    assert_eq!((rollout.step_number, rollout.steps_total), (1, 2));
    assert_eq!(
        rollout.rollout.outcome.as_deref(),
        Some("promoted by admin")
    );
}

#[test]
fn captured_refusals_keep_their_envelope() {
    for (line, kind) in [
        (
            include_str!("samples/nosuchroute.json"),
            ErrorKind::NotFound,
        ),
        (
            include_str!("samples/reload-invalid.json"),
            ErrorKind::InvalidConfig,
        ),
        (
            include_str!("samples/switch-unhealthy-refused.json"),
            ErrorKind::Unhealthy,
        ),
    ] {
        let response: Response = serde_json::from_str(line).unwrap();
        assert!(!response.ok && response.result.is_none());
        let error = response.error.clone().unwrap();
        assert_eq!(error.kind, kind);
        assert_eq!(
            Response::error(error.kind, error.message.clone()).to_line(),
            line
        );
        let refused = response.reply::<ChangeReply>().unwrap_err();
        assert!(matches!(refused, ReplyError::Refused(_)), "{refused}");
        assert!(refused
            .to_string()
            .starts_with(&format!("refused ({})", kind.as_str())));
    }
}

#[test]
fn error_kinds_as_str_are_their_wire_names() {
    use ErrorKind::*;
    for kind in [
        BadRequest,
        TooLarge,
        Forbidden,
        NotFound,
        Refused,
        Unhealthy,
        InvalidConfig,
        Internal,
    ] {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
    }
}

/// The documented envelope: `{"ok":true,"result":{...}}` without `error`,
/// the result's keys in sorted order as `json!` gave them.
#[test]
fn a_typed_result_has_the_documented_envelope() {
    let reply = DrainReply {
        route: "app".into(),
        slot: "blue".into(),
        in_flight: 3,
        upgraded: 1,
        serving: false,
    };
    let response = Response::ok_with(&reply);
    assert_eq!(
        response.to_line(),
        "{\"ok\":true,\"result\":{\"in_flight\":3,\"route\":\"app\",\"serving\":false,\"slot\":\"blue\",\"upgraded\":1}}\n"
    );
    assert_eq!(response.reply::<DrainReply>().unwrap(), reply);
    let value: Value = serde_json::from_str(&response.to_line()).unwrap();
    assert_eq!(value.as_object().unwrap().len(), 2, "ok and result only");

    let refused = Response::error(ErrorKind::Refused, "no");
    assert_eq!(
        refused.to_line(),
        "{\"ok\":false,\"error\":{\"kind\":\"refused\",\"message\":\"no\"}}\n"
    );
}

#[test]
fn a_result_of_another_shape_is_an_error_not_a_panic() {
    let drain = Response::ok(json!({"route": "app", "slot": "blue"}));
    let error = drain.reply::<DrainReply>().unwrap_err();
    assert!(matches!(error, ReplyError::Shape(_)), "{error}");
    assert!(error.to_string().contains("in_flight"), "{error}");
    assert!(Reply::parse(&status(), json!([1, 2])).is_err());
    assert!(Reply::parse(&switch(), Value::Null).is_err());
    let empty = Response {
        ok: true,
        result: None,
        error: None,
    };
    assert!(matches!(
        empty.reply::<StatusReply>(),
        Err(ReplyError::NoResult)
    ));
}

/// The backend JSON the controller wrote with `json!` before its replies
/// were typed: the wire shape the constructors must keep.
fn controller_backend_json(
    addr: SocketAddr,
    state: BackendState,
    since: SystemTime,
    last: Option<(&Check, SystemTime)>,
) -> Value {
    let last = last.map(|(check, at)| {
        let (ok, latency, detail) = match check {
            Check::Pass { status, latency } => (true, latency, json!({ "status": status })),
            Check::Fail { failure, latency } => match failure {
                Failure::Status(code) => (false, latency, json!({ "status": code })),
                other => (false, latency, json!({ "error": other.to_string() })),
            },
        };
        let mut value = json!({
            "ok": ok,
            "latency_ms": latency.as_secs_f64() * 1000.0,
            "at": status::rfc3339(at),
        });
        if let (Some(v), Some(d)) = (value.as_object_mut(), detail.as_object()) {
            v.extend(d.clone());
        }
        value
    });
    json!({
        "address": addr.to_string(),
        "state": state,
        "since": status::rfc3339(since),
        "last_check": last,
    })
}

#[test]
fn backend_constructors_write_what_the_controller_writes() {
    let addr: SocketAddr = "127.0.0.1:3001".parse().unwrap();
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let at = since + Duration::from_secs(7);
    let latency = Duration::from_micros(1234);
    let checks = [
        Check::Pass {
            status: Some(200),
            latency,
        },
        Check::Pass {
            status: None,
            latency,
        },
        Check::Fail {
            failure: Failure::Status(503),
            latency,
        },
        Check::Fail {
            failure: Failure::Timeout,
            latency,
        },
        Check::Fail {
            failure: Failure::Connect("refused".into()),
            latency: Duration::ZERO,
        },
    ];
    for check in &checks {
        let typed = BackendStatus::tracked(addr, BackendState::Healthy, since, Some((check, at)));
        let value = serde_json::to_value(&typed).unwrap();
        let expected =
            controller_backend_json(addr, BackendState::Healthy, since, Some((check, at)));
        assert_eq!(value, expected, "{check:?}");
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        let back: BackendStatus = serde_json::from_value(value).unwrap();
        assert_eq!(back, typed, "{check:?}");
    }
    let unchecked = BackendStatus::tracked(addr, BackendState::Unknown, since, None);
    assert_eq!(
        serde_json::to_value(&unchecked).unwrap(),
        controller_backend_json(addr, BackendState::Unknown, since, None)
    );
    // Not tracked yet: two keys only.
    let untracked = BackendStatus::untracked(addr);
    let value = serde_json::to_value(&untracked).unwrap();
    assert_eq!(
        value,
        json!({"address": "127.0.0.1:3001", "state": "unknown"})
    );
    assert_eq!(
        serde_json::from_value::<BackendStatus>(value).unwrap(),
        untracked
    );
}

fn sample_rollout() -> Rollout {
    let plan = Plan {
        steps: vec![
            Step {
                weight: 10,
                hold_ms: Some(60_000),
            },
            Step {
                weight: 50,
                hold_ms: Some(60_000),
            },
            Step {
                weight: 100,
                hold_ms: None,
            },
        ],
        max_error_rate: 0.05,
        max_latency_increase: 0.5,
        min_requests: 100,
        window_ms: 60_000,
    };
    let mut rollout = Rollout::start(plan, "green", "2026-11-22T11:30:00Z");
    rollout.enter_step(1);
    rollout.verdict = Some(Verdict {
        result: crate::rollout::VerdictResult::Pass,
        reason: "1.0 % errors, p95 12.0 ms against 11.0 ms".into(),
        canary_requests: 250,
        canary_error_rate: 0.01,
        canary_p95_ms: Some(12.0),
        baseline_p95_ms: Some(11.0),
    });
    rollout
}

#[test]
fn rollout_status_is_what_the_controller_writes() {
    let rollout = sample_rollout();
    let left = Duration::from_millis(41_500);
    // What the controller wrote before replies were typed, step by step.
    let mut expected = serde_json::to_value(&rollout).unwrap();
    expected["step_number"] = json!(rollout.step + 1);
    expected["steps_total"] = json!(rollout.plan.steps.len());
    expected["weight"] = json!(rollout.weight());
    expected["hold_left_ms"] = json!(left.as_millis() as u64);

    let typed = RolloutStatus::new(&rollout, left);
    let value = serde_json::to_value(&typed).unwrap();
    assert_eq!(value, expected);
    assert_eq!(value["weight"], 50);
    assert_eq!(value["verdict"]["canary_p95_ms"], 12.0);
    assert_eq!(
        serde_json::from_value::<RolloutStatus>(value).unwrap(),
        typed
    );
}

#[test]
fn reload_shapes_keep_changed_and_pending_edit_absent_or_present() {
    let applied = serde_json::to_value(ReloadReply::applied(4, 2, vec![], None)).unwrap();
    assert_eq!(
        applied,
        json!({"generation": 4, "routes": 2, "needs_restart": []})
    );
    let unchanged = serde_json::to_value(ReloadReply::unchanged(4, 2, vec![])).unwrap();
    assert_eq!(
        unchanged,
        json!({"generation": 4, "routes": 2, "needs_restart": [], "changed": false})
    );
    let pending = PendingEditStatus {
        removes: vec!["route bad".into()],
        since: "2026-12-01T17:46:13Z".into(),
        applies_at: "2026-12-01T17:46:16Z".into(),
        applies_in_ms: 2232,
        settle: "3s".into(),
    };
    let held = ReloadReply::held(4, 2, vec![], pending.clone());
    let value = serde_json::to_value(&held).unwrap();
    assert_eq!(
        value,
        json!({"generation": 4, "routes": 2, "needs_restart": [], "changed": false,
               "pending_edit": serde_json::to_value(&pending).unwrap()})
    );
    assert_eq!(serde_json::from_value::<ReloadReply>(value).unwrap(), held);
}

#[test]
fn tls_status_is_what_the_certificate_loader_writes() {
    let cert = CertificateStatus {
        cert: "/etc/switchyard/app.pem".into(),
        key: "/etc/switchyard/app.key".into(),
        names: vec!["app.example.com".into()],
        default: true,
        not_before: "2026-01-01T00:00:00Z".into(),
        not_after: "2027-01-01T00:00:00Z".into(),
        not_after_unix: 1_798_761_600,
    };
    let at = "2026-12-01T17:45:47Z".to_string();
    for error in [None, Some("app.pem holds no certificate".to_string())] {
        let typed = TlsStatus::new(vec![cert.clone()], at.clone(), error.clone());
        // `report` in proxy/src/tls/reload.rs, as it was.
        let expected = json!({
            "certificates": [serde_json::to_value(&cert).unwrap()],
            "last_load": {
                "at": at,
                "result": if error.is_some() { "error" } else { "ok" },
                "error": error,
            },
        });
        assert_eq!(serde_json::to_value(&typed).unwrap(), expected);
    }
}
