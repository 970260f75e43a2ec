//! Requests and the envelope.

use super::*;

fn error_of(line: &str) -> ErrorBody {
    parse_request(line.as_bytes()).unwrap_err().error.unwrap()
}

#[test]
fn parses_the_documented_switch_request() {
    let req = parse_request(
        br#"{"cmd":"switch","route":"app","slot":"green","timeout":"30s","reason":"v42"}"#,
    )
    .unwrap();
    assert_eq!(
        req,
        Request::Switch {
            route: "app".into(),
            slot: "green".into(),
            timeout: Some("30s".into()),
            force: false,
            reason: Some("v42".into()),
            no_guard: false,
            local: false,
        }
    );
}

#[test]
fn bad_json_unknown_command_and_bad_fields_say_what_is_wrong() {
    assert!(error_of("{nope").message.contains("not valid JSON"));
    assert!(error_of(r#"{"route":"app"}"#)
        .message
        .contains("needs a \"cmd\""));
    let unknown = error_of(r#"{"cmd":"explode"}"#);
    assert_eq!(unknown.kind, ErrorKind::BadRequest);
    assert!(unknown.message.contains("unknown command \"explode\""));
    assert!(error_of(r#"{"cmd":"switch","route":"app"}"#)
        .message
        .contains("slot"));
    assert!(
        error_of(r#"{"cmd":"canary","route":"a","slot":"b","weight":300}"#)
            .message
            .contains("canary")
    );
    assert!(error_of(r#"{"cmd":"reload","extra":1}"#)
        .message
        .contains("extra"));
}

#[test]
fn the_unknown_command_error_lists_every_command() {
    let message = error_of(r#"{"cmd":"explode"}"#).message;
    let (_, known) = message.split_once("known: ").expect(&message);
    let listed: Vec<&str> = known.split(", ").collect();
    assert_eq!(listed, COMMANDS, "{message}");
    for cmd in ["rollout", "drain"] {
        assert!(listed.contains(&cmd), "{message}");
    }
}

/// serde knows the variants of `Request` from its definition: its own
/// "unknown variant" error lists them, and it must list exactly
/// `COMMANDS`.
#[test]
fn commands_are_exactly_the_request_variants() {
    let error = serde_json::from_value::<Request>(serde_json::json!({"cmd": "explode"}))
        .unwrap_err()
        .to_string();
    let (_, expected) = error.split_once("expected one of ").expect(&error);
    let variants: Vec<&str> = expected
        .split(", ")
        .map(|v| v.trim().trim_matches('`'))
        .collect();
    assert_eq!(variants, COMMANDS, "serde says: {error}");
}

#[test]
fn every_request_names_a_listed_command() {
    let samples = [
        r#"{"cmd":"status"}"#,
        r#"{"cmd":"switch","route":"a","slot":"b"}"#,
        r#"{"cmd":"rollback","route":"a"}"#,
        r#"{"cmd":"canary","route":"a","slot":"b","weight":5}"#,
        r#"{"cmd":"rollout","action":"start","route":"a","slot":"b"}"#,
        r#"{"cmd":"history"}"#,
        r#"{"cmd":"reload"}"#,
        r#"{"cmd":"drain","route":"a","slot":"b"}"#,
        r#"{"cmd":"confirm","route":"a"}"#,
        r#"{"cmd":"maintenance","route":"a","on":true}"#,
    ];
    let mut names: Vec<&str> = samples
        .iter()
        .map(|line| parse_request(line.as_bytes()).unwrap().name())
        .collect();
    assert_eq!(names, COMMANDS, "one sample per command, in order");
    names.dedup();
    assert_eq!(names.len(), COMMANDS.len());
    for sample in samples {
        let request = parse_request(sample.as_bytes()).unwrap();
        let value = serde_json::to_value(&request).unwrap();
        assert_eq!(value["cmd"], request.name(), "name() is the wire name");
    }
}

#[test]
fn responses_round_trip_as_single_lines() {
    let line = Response::error(ErrorKind::NotFound, "no route \"x\"").to_line();
    assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    let back: Response = serde_json::from_str(&line).unwrap();
    assert_eq!(back.error.unwrap().kind, ErrorKind::NotFound);
}
