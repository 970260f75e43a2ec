//! The admin protocol: JSON lines over a Unix socket, one request object per
//! line and one response per line. These types are shared by the server
//! (`admin_server`) and the `switchyard` CLI.

use serde::{Deserialize, Serialize};

/// Lines longer than this are refused; a request is a few hundred bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// One admin command. `{"cmd":"switch","route":"app","slot":"green"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The whole state, or one route's.
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<String>,
    },
    /// Make `slot` the route's active slot; the old one becomes previous.
    Switch {
        route: String,
        slot: String,
        /// How long to wait for the slot to turn healthy, e.g. "30s".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
        /// Switch even to a slot that is not healthy.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Swap the active and previous slots.
    Rollback {
        route: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Roll back even to a previous slot known unhealthy.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Send `weight` % of new traffic to `slot`; 0 ends the canary.
    Canary {
        route: String,
        slot: String,
        weight: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Start, pause, resume, promote or abort a route's rollout.
    /// `{"cmd":"rollout","action":"start","route":"app","slot":"green"}`.
    Rollout {
        action: RolloutAction,
        route: String,
        /// The slot to roll out; `start` needs it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The newest history entries, oldest first.
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Re-read the config file now. (A struct variant, so that unknown
    /// fields are refused like everywhere else.)
    Reload {},
    /// Requests and upgraded connections still in flight on `slot`; with
    /// `wait`, answered once there are none (or refused at `timeout`).
    Drain {
        route: String,
        slot: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wait: bool,
        /// How long to wait, e.g. "60s"; default 60 s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
}

/// Every `cmd` the server accepts: the one list the "unknown command" error
/// shows. Its tests check it against serde's own list of [`Request`]'s
/// variants and against [`Request::name`], so a new command cannot be left
/// out.
pub const COMMANDS: &[&str] = &[
    "status", "switch", "rollback", "canary", "rollout", "history", "reload", "drain",
];

impl Request {
    /// The request's `cmd`, as on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status { .. } => "status",
            Request::Switch { .. } => "switch",
            Request::Rollback { .. } => "rollback",
            Request::Canary { .. } => "canary",
            Request::Rollout { .. } => "rollout",
            Request::History { .. } => "history",
            Request::Reload {} => "reload",
            Request::Drain { .. } => "drain",
        }
    }
}

/// What `rollout` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutAction {
    Start,
    Pause,
    Resume,
    Promote,
    Abort,
}

impl RolloutAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Start => "start",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Promote => "promote",
            RolloutAction::Abort => "abort",
        }
    }
}

/// Why a command was not done; `kind` is stable for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not JSON, or not a known command with the right fields.
    BadRequest,
    /// The line exceeded [`MAX_LINE_BYTES`].
    TooLarge,
    /// The peer's uid may not use the socket.
    Forbidden,
    /// No such route or slot.
    NotFound,
    /// The command is valid but the state forbids it (no previous slot,
    /// canary equal to active, ...).
    Refused,
    /// The target slot is not healthy.
    Unhealthy,
    /// The config file does not validate; the running config stays.
    InvalidConfig,
    /// Something on the server side failed (state file not writable, ...).
    Internal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

/// `{"ok":true,"result":{...}}` or `{"ok":false,"error":{"kind":..,"message":..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A success with a typed result, serialized as the wire has it.
    pub fn ok_with(result: &impl Serialize) -> Response {
        match serde_json::to_value(result) {
            Ok(value) => Response::ok(value),
            Err(e) => Response::error(ErrorKind::Internal, format!("cannot encode the reply: {e}")),
        }
    }

    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(ErrorBody {
                kind,
                message: message.into(),
            }),
        }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"ok":false,"error":{{"kind":"internal","message":"cannot encode response: {e}"}}}}"#)
        });
        line.push('\n');
        line
    }
}

/// Parses one request line into a request, or the error response to send.
pub fn parse_request(line: &[u8]) -> Result<Request, Response> {
    let text = std::str::from_utf8(line)
        .map_err(|_| Response::error(ErrorKind::BadRequest, "request is not UTF-8"))?;
    let value: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
        Response::error(
            ErrorKind::BadRequest,
            format!("request is not valid JSON: {e}"),
        )
    })?;
    let cmd = value.get("cmd").and_then(|c| c.as_str()).map(str::to_owned);
    serde_json::from_value(value).map_err(|e| {
        let message = match cmd {
            None => r#"request needs a "cmd" field, e.g. {"cmd":"status"}"#.to_string(),
            Some(cmd) if !COMMANDS.contains(&cmd.as_str()) => {
                format!("unknown command {cmd:?}; known: {}", COMMANDS.join(", "))
            }
            Some(cmd) => format!("bad {cmd:?} request: {e}"),
        };
        Response::error(ErrorKind::BadRequest, message)
    })
}

#[cfg(test)]
mod tests {
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
}
