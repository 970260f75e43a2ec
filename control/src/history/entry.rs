//! One history line, typed. The JSON is the one written since the history
//! began: `trigger`, `action` and `result` are plain strings on the wire
//! (`"result": "refused: <why>"`), so files written by earlier versions read
//! back, and scripts reading the file keep working.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::protocol::RolloutAction;

/// The `route` of entries about the whole server, such as a reload.
pub const ALL_ROUTES: &str = "*";

/// One change, or one refused or failed attempt at a change.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// RFC 3339 UTC, see [`super::now_rfc3339`].
    pub time: String,
    pub trigger: Trigger,
    /// The peer's uid, for admin commands.
    pub uid: Option<u32>,
    /// The route's name; [`ALL_ROUTES`] for what concerns every route.
    pub route: String,
    pub action: Action,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: Option<String>,
    pub result: Outcome,
    /// The routing table generation published by this change.
    pub generation: Option<u64>,
    /// `[cluster]`: the node that made the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl HistoryEntry {
    /// An entry of `action` on `route` at `time`, done (`ok`), with nothing
    /// else said yet.
    pub fn new(time: &str, trigger: Trigger, route: &str, action: Action) -> HistoryEntry {
        HistoryEntry {
            time: time.to_string(),
            trigger,
            uid: None,
            route: route.to_string(),
            action,
            from: None,
            to: None,
            reason: None,
            result: Outcome::Ok,
            generation: None,
            node: None,
        }
    }
}

/// Who or what asked for the change.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A command on the admin socket.
    Admin,
    /// An action on the dashboard (`admin_http`, with the token).
    Dashboard,
    /// The config file.
    Config,
    /// Health moved traffic by itself.
    Failback,
    /// A rollout's own clock or analysis.
    Rollout,
    /// The watch after a switch.
    Guard,
    Startup,
    /// A decision another node of the `[cluster]` wrote to etcd, applied
    /// here.
    Cluster,
}

/// Who sent an admin command: a peer on the admin socket, with its uid
/// when the socket could tell, or the dashboard's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Socket { uid: Option<u32> },
    Dashboard,
}

impl Caller {
    /// The history's `trigger` for what this caller asks.
    pub fn trigger(self) -> Trigger {
        match self {
            Caller::Socket { .. } => Trigger::Admin,
            Caller::Dashboard => Trigger::Dashboard,
        }
    }

    /// The history's `uid`.
    pub fn uid(self) -> Option<u32> {
        match self {
            Caller::Socket { uid } => uid,
            Caller::Dashboard => None,
        }
    }
}

/// What was changed, or tried.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    #[serde(rename = "switch")]
    Switch,
    #[serde(rename = "rollback")]
    Rollback,
    #[serde(rename = "canary")]
    Canary,
    #[serde(rename = "reload")]
    Reload,
    #[serde(rename = "rollout start")]
    RolloutStart,
    #[serde(rename = "rollout pause")]
    RolloutPause,
    #[serde(rename = "rollout resume")]
    RolloutResume,
    #[serde(rename = "rollout promote")]
    RolloutPromote,
    #[serde(rename = "rollout abort")]
    RolloutAbort,
    /// A rollout moved to its next step.
    #[serde(rename = "rollout step")]
    RolloutStep,
    /// `switchyard confirm`: the guard ended early as passed.
    #[serde(rename = "confirm")]
    Confirm,
    /// The guard's window ended without a breach.
    #[serde(rename = "guard passed")]
    GuardPassed,
    /// The guard saw a breach and had nowhere to roll back to.
    #[serde(rename = "guard breached")]
    GuardBreached,
    #[serde(rename = "maintenance on")]
    MaintenanceOn,
    #[serde(rename = "maintenance off")]
    MaintenanceOff,
    /// A route's decision, taken from the cluster's shared state.
    #[serde(rename = "adopt")]
    Adopt,
}

impl Trigger {
    /// As on the wire: `admin`, `config`, `failback`, `rollout`, `startup`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Admin => "admin",
            Trigger::Dashboard => "dashboard",
            Trigger::Config => "config",
            Trigger::Failback => "failback",
            Trigger::Rollout => "rollout",
            Trigger::Guard => "guard",
            Trigger::Startup => "startup",
            Trigger::Cluster => "cluster",
        }
    }
}

/// As on the wire; widths and alignment (`{:<8}`) apply.
impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// As on the wire; widths and alignment apply.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Action {
    /// As on the wire: `switch`, `rollout step`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Switch => "switch",
            Action::Rollback => "rollback",
            Action::Canary => "canary",
            Action::Reload => "reload",
            Action::RolloutStart => "rollout start",
            Action::RolloutPause => "rollout pause",
            Action::RolloutResume => "rollout resume",
            Action::RolloutPromote => "rollout promote",
            Action::RolloutAbort => "rollout abort",
            Action::RolloutStep => "rollout step",
            Action::Confirm => "confirm",
            Action::GuardPassed => "guard passed",
            Action::GuardBreached => "guard breached",
            Action::MaintenanceOn => "maintenance on",
            Action::MaintenanceOff => "maintenance off",
            Action::Adopt => "adopt",
        }
    }

    pub fn rollout(action: RolloutAction) -> Action {
        match action {
            RolloutAction::Start => Action::RolloutStart,
            RolloutAction::Pause => Action::RolloutPause,
            RolloutAction::Resume => Action::RolloutResume,
            RolloutAction::Promote => Action::RolloutPromote,
            RolloutAction::Abort => Action::RolloutAbort,
        }
    }
}

/// How it ended. On the wire: `ok`, `ok: no change`, or one of `refused`,
/// `failed`, `held`, `withdrawn` followed by `: <why>`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(into = "String", try_from = "String")]
pub enum Outcome {
    Ok,
    /// Accepted, but the route already was that way.
    NoChange,
    Refused(String),
    Failed(String),
    /// A config edit waiting before it applies.
    Held(String),
    /// A held config edit dropped.
    Withdrawn(String),
}

const NO_CHANGE: &str = "ok: no change";

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::NoChange => f.write_str(NO_CHANGE),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
            Outcome::Held(why) => write!(f, "held: {why}"),
            Outcome::Withdrawn(why) => write!(f, "withdrawn: {why}"),
        }
    }
}

impl From<Outcome> for String {
    fn from(outcome: Outcome) -> String {
        outcome.to_string()
    }
}

impl TryFrom<String> for Outcome {
    type Error = String;

    fn try_from(text: String) -> Result<Outcome, String> {
        match text.as_str() {
            "ok" => return Ok(Outcome::Ok),
            NO_CHANGE => return Ok(Outcome::NoChange),
            _ => {}
        }
        let Some((kind, why)) = text.split_once(": ") else {
            return Err(format!("unknown result {text:?}"));
        };
        let why = why.to_string();
        match kind {
            "refused" => Ok(Outcome::Refused(why)),
            "failed" => Ok(Outcome::Failed(why)),
            "held" => Ok(Outcome::Held(why)),
            "withdrawn" => Ok(Outcome::Withdrawn(why)),
            _ => Err(format!("unknown result {text:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_written_by_earlier_versions_read_back_unchanged() {
        let lines = [
            r#"{"time":"2026-11-22T11:30:00Z","trigger":"admin","uid":1001,"route":"app","action":"switch","from":"active=blue","to":"active=green","reason":"deploy","result":"ok","generation":4}"#,
            r#"{"time":"2026-11-22T11:30:00Z","trigger":"admin","uid":null,"route":"app","action":"canary","from":"active=blue","to":"active=blue","reason":null,"result":"ok: no change","generation":4}"#,
            r#"{"time":"2026-11-22T11:30:00Z","trigger":"failback","uid":null,"route":"app","action":"switch","from":"active=green","to":"active=blue","reason":"slot green unhealthy: x","result":"ok","generation":5}"#,
            r#"{"time":"2026-11-22T11:30:00Z","trigger":"admin","uid":0,"route":"app","action":"rollback","from":"active=blue","to":null,"reason":null,"result":"refused: the previous slot: is: unhealthy","generation":null}"#,
            r#"{"time":"2026-11-22T11:30:00Z","trigger":"config","uid":null,"route":"*","action":"reload","from":"generation 3","to":null,"reason":null,"result":"failed: 2 error(s)","generation":null}"#,
            r#"{"time":"2026-11-22T11:30:00Z","trigger":"config","uid":null,"route":"*","action":"reload","from":"generation 3","to":null,"reason":"removes route api","result":"held: applied if the file stays this way for 3s","generation":null}"#,
            r#"{"time":"2026-11-22T11:30:00Z","trigger":"config","uid":null,"route":"*","action":"reload","from":"generation 3","to":null,"reason":"removes route api","result":"withdrawn: the file changed again","generation":null}"#,
            r#"{"time":"2026-11-22T11:30:00Z","trigger":"rollout","uid":null,"route":"app","action":"rollout step","from":"active=blue canary=green:10","to":"active=blue canary=green:50","reason":"hold done","result":"ok","generation":9}"#,
        ];
        for line in lines {
            let entry: HistoryEntry =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let again = serde_json::to_string(&entry).unwrap();
            assert_eq!(again, line);
        }
    }

    #[test]
    fn actions_name_themselves_as_the_wire_does() {
        use Action::*;
        for action in [
            Switch,
            Rollback,
            Canary,
            Reload,
            RolloutStart,
            RolloutPause,
            RolloutResume,
            RolloutPromote,
            RolloutAbort,
            RolloutStep,
            Confirm,
            GuardPassed,
            GuardBreached,
            MaintenanceOn,
            MaintenanceOff,
        ] {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
        for trigger in [
            Trigger::Admin,
            Trigger::Config,
            Trigger::Failback,
            Trigger::Rollout,
            Trigger::Guard,
            Trigger::Startup,
        ] {
            assert_eq!(serde_json::to_value(trigger).unwrap(), trigger.as_str());
        }
        assert_eq!(format!("[{:<8}]", Trigger::Admin), "[admin   ]");
    }

    #[test]
    fn a_result_of_an_unknown_kind_is_not_read_as_another() {
        assert!(Outcome::try_from("maybe: later".to_string()).is_err());
        assert!(Outcome::try_from("okay".to_string()).is_err());
        assert_eq!(
            Outcome::try_from("refused: a: b".to_string()),
            Ok(Outcome::Refused("a: b".into()))
        );
    }
}
