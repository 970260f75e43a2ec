//! The core driven by a fake clock: every event at a made-up instant, every
//! effect collected, no I/O and no sleeping.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use switchyard_conf::Config;

use super::{ConfigRejected, Core, Effect, Event, Now, ReloadTrigger, ReplyTo};
use crate::health::monitor::BackendKey;
use crate::health::{Check, Failure};
use crate::history::HistoryEntry;
use crate::protocol::{Request, Response};
use crate::state_file::{LoadedState, RouteState};
use crate::table::RoutingTable;

mod cluster;
mod commands;
mod guard;
mod health;
mod reload;
mod rollouts;

pub const BLUE: &str = "127.0.0.1:3001";
pub const GREEN: &str = "127.0.0.1:3002";

/// `[server]`, then a route `app` with slots blue and green, blue active,
/// HTTP probes every second (rise 2, fall 3), then `extra`.
pub fn app(extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nstate_dir = \"state\"\n\n\
         [[route]]\nname = \"app\"\nactive = \"blue\"\n\
         [route.slots]\nblue = [\"{BLUE}\"]\ngreen = [\"{GREEN}\"]\n\
         [route.health]\npath = \"/health\"\ninterval = \"1s\"\nrise = 2\nfall = 3\n{extra}"
    )
}

pub fn parse(text: &str) -> Config {
    switchyard_conf::parse("test.toml", text, Path::new("/"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The core and everything it asked of the world so far.
pub struct Rig {
    pub core: Core,
    pub now: Now,
    pub replies: BTreeMap<ReplyTo, Response>,
    pub history: Vec<HistoryEntry>,
    pub tables: Vec<Arc<RoutingTable>>,
    pub saved: Option<BTreeMap<String, RouteState>>,
    /// Config reads the core asked for and the rig has not answered.
    pub reads: Vec<ReloadTrigger>,
    /// `history` requests, answered by the shell.
    pub history_reads: usize,
    /// What `[[notify]]` targets would be told.
    pub notices: Vec<crate::notify::Notice>,
    next_reply: ReplyTo,
}

impl Rig {
    pub fn new(text: &str) -> Rig {
        Rig::restored(text, LoadedState::default())
    }

    /// A core started over a state file that held `loaded`.
    pub fn restored(text: &str, loaded: LoadedState) -> Rig {
        Rig::restored_later(text, loaded, Duration::ZERO)
    }

    /// [`Rig::restored`], `later` on the wall clock than a new rig starts.
    pub fn restored_later(text: &str, loaded: LoadedState, later: Duration) -> Rig {
        let now = Now {
            at: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + later,
        };
        let (core, effects) = Core::new(parse(text), PathBuf::from("test.toml"), loaded, now);
        let mut rig = Rig {
            core,
            now,
            replies: BTreeMap::new(),
            history: Vec::new(),
            tables: Vec::new(),
            saved: None,
            reads: Vec::new(),
            history_reads: 0,
            notices: Vec::new(),
            next_reply: 0,
        };
        rig.collect(effects);
        rig
    }

    pub fn apply(&mut self, event: Event) {
        let effects = self.core.apply(event, self.now);
        self.collect(effects);
    }

    fn collect(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Publish(table) => self.tables.push(table),
                Effect::SaveState(routes) => self.saved = Some(routes),
                Effect::AppendHistory(entry) => self.history.push(entry),
                Effect::Reply { to, response } => {
                    let earlier = self.replies.insert(to, response);
                    assert!(earlier.is_none(), "command {to} answered twice");
                }
                Effect::ReplyHistory { .. } => self.history_reads += 1,
                Effect::ReadConfig(trigger) => self.reads.push(trigger),
                Effect::Notify(notice) => self.notices.push(notice),
                Effect::ConfigApplied
                | Effect::ServeCertificates(_)
                | Effect::Log(_)
                | Effect::CountReload(_) => {}
            }
        }
    }

    /// Moves the clock on by `elapsed`, ticking at every wake-up the core
    /// asks for on the way, as the shell would.
    pub fn advance(&mut self, elapsed: Duration) {
        let end = self.now.at + elapsed;
        while let Some(wake) = self.core.next_wakeup().filter(|w| *w <= end) {
            let step = wake.saturating_duration_since(self.now.at);
            self.now = self.now.after(step);
            self.apply(Event::Tick);
            // A wake-up that does not move is a core that would spin.
            if self.core.next_wakeup() == Some(wake) {
                panic!("the core asked to be woken at the same instant again");
            }
        }
        self.now = self.now.after(end.saturating_duration_since(self.now.at));
    }

    pub fn command(&mut self, request: Request) -> ReplyTo {
        let reply = self.next_reply;
        self.next_reply += 1;
        self.apply(Event::Command {
            reply,
            request,
            caller: crate::history::Caller::Socket { uid: Some(1000) },
        });
        reply
    }

    /// Runs `request` and returns its answer, which must come at once.
    pub fn run(&mut self, request: Request) -> Response {
        let reply = self.command(request);
        self.replies
            .remove(&reply)
            .unwrap_or_else(|| panic!("command {reply} not answered at once"))
    }

    pub fn result(&mut self, request: Request) -> Value {
        let response = self.run(request);
        assert!(response.ok, "{response:?}");
        response.result.unwrap_or_default()
    }

    pub fn check(&mut self, slot: &str, addr: &str, check: Check) {
        let key = BackendKey {
            route: Arc::from("app"),
            slot: Arc::from(slot),
            addr: addr.parse::<SocketAddr>().unwrap(),
        };
        self.apply(Event::Checks(vec![(key, check)]));
    }

    pub fn pass(&mut self, slot: &str, addr: &str, times: usize) {
        for _ in 0..times {
            let ok = Check::Pass {
                status: Some(200),
                latency: Duration::from_millis(1),
            };
            self.check(slot, addr, ok);
        }
    }

    pub fn fail(&mut self, slot: &str, addr: &str, times: usize) {
        for _ in 0..times {
            let failed = Check::Fail {
                failure: Failure::Status(500),
                latency: Duration::from_millis(2),
            };
            self.check(slot, addr, failed);
        }
    }

    /// Both slots healthy.
    pub fn all_healthy(&mut self) {
        self.pass("blue", BLUE, 2);
        self.pass("green", GREEN, 2);
    }

    /// The file now reads `text`, seen by the watcher.
    pub fn file_edited(&mut self, text: &str) {
        self.config_read(ReloadTrigger::File, Ok(parse(text)));
    }

    pub fn config_read(&mut self, trigger: ReloadTrigger, result: Result<Config, ConfigRejected>) {
        self.apply(Event::ConfigRead {
            trigger,
            result: result.map(Box::new),
        });
    }

    pub fn state(&self) -> &RouteState {
        &self.core.routes["app"]
    }

    pub fn active(&self) -> &str {
        &self.state().active
    }

    pub fn last_table(&self) -> &RoutingTable {
        self.tables.last().expect("a table was published")
    }

    /// The history entries recorded since entry `from`, as `trigger action
    /// result` lines.
    pub fn entries_since(&self, from: usize) -> Vec<String> {
        self.history[from..]
            .iter()
            .map(|e| format!("{:?} {} {}", e.trigger, e.action.as_str(), e.result))
            .collect()
    }
}

pub fn switch(slot: &str) -> Request {
    Request::Switch {
        route: "app".into(),
        slot: slot.into(),
        timeout: None,
        force: false,
        reason: Some("deploy".into()),
        no_guard: false,
        local: false,
    }
}
