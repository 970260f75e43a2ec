//! `[route.health] expect_body`: judging a probe's answer by its body too,
//! for backends that answer 200 with `{"status":"degraded"}`.

use switchyard_conf::BodyExpectation;

/// The most of a probe's body that is read; a body that goes on is judged
/// by its start.
pub const MAX_PROBE_BODY: usize = 64 * 1024;

/// `Ok` when `body` says what `expect` asks for; else what it said instead,
/// in a few words, for the backend's last check.
pub fn judge_body(expect: &BodyExpectation, body: &[u8]) -> Result<(), String> {
    match expect {
        BodyExpectation::Contains(text) => {
            let found = body
                .windows(text.len().max(1))
                .any(|w| w == text.as_bytes());
            if found {
                Ok(())
            } else {
                Err(format!("body lacks {text:?}: {}", excerpt(body)))
            }
        }
        BodyExpectation::JsonField { field, value } => {
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
                return Err(format!("body is not JSON: {}", excerpt(body)));
            };
            let found = match json.get(field) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            };
            match found {
                Some(found) if found == *value => Ok(()),
                Some(found) => Err(format!("{field} is {found:?}, not {value:?}")),
                None => Err(format!("body has no {field:?}: {}", excerpt(body))),
            }
        }
    }
}

/// The body's start, as text, for a message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    let text = text.trim();
    if body.len() > 80 {
        format!("{text:?}…")
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(field: &str, value: &str) -> BodyExpectation {
        BodyExpectation::JsonField {
            field: field.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_text_must_be_in_the_body() {
        let ok = BodyExpectation::Contains("ok".into());
        assert_eq!(judge_body(&ok, b"all ok here"), Ok(()));
        let missing = judge_body(&ok, b"down").unwrap_err();
        assert!(
            missing.contains("lacks \"ok\"") && missing.contains("down"),
            "{missing}"
        );
        assert!(judge_body(&ok, b"").is_err());
    }

    #[test]
    fn a_json_field_must_have_the_value() {
        let healthy = field("status", "healthy");
        assert_eq!(
            judge_body(&healthy, br#"{"status":"healthy","db":"ok"}"#),
            Ok(())
        );
        let degraded = judge_body(&healthy, br#"{"status":"degraded"}"#).unwrap_err();
        assert_eq!(degraded, "status is \"degraded\", not \"healthy\"");
        assert!(judge_body(&healthy, br#"{"state":"healthy"}"#)
            .unwrap_err()
            .contains("no \"status\""));
        assert!(judge_body(&healthy, b"healthy")
            .unwrap_err()
            .contains("not JSON"));
        assert!(judge_body(&healthy, br#"["status"]"#).is_err());
        assert_eq!(
            judge_body(&field("ready", "true"), br#"{"ready":true}"#),
            Ok(())
        );
        assert_eq!(
            judge_body(&field("workers", "4"), br#"{"workers":4}"#),
            Ok(())
        );
        assert!(judge_body(&field("ready", "true"), br#"{"ready":null}"#).is_err());
    }
}
