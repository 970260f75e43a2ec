//! The etcd side of `[cluster]`: every route's decision (its `RouteState`
//! as JSON), read whole, written only by compare-and-swap on the key's
//! revision, and watched from a revision on.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use switchyard_conf::ClusterConfig;

use super::Keys;
use crate::history::HistoryEntry;
use crate::protocol::NodeView;
use crate::state_file::RouteState;

/// One route's decision and the revision it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub state: RouteState,
    /// The key's `mod_revision`: what the next write compares against.
    pub revision: i64,
}

/// How a compare-and-swap went.
#[derive(Debug, PartialEq)]
pub enum Written {
    /// Stored at this revision.
    Done { revision: i64 },
    /// Another node wrote first: what is there now (`None`: nothing).
    Lost { current: Option<Box<Decision>> },
}

/// A change another node (or this one) made, as the watch saw it.
#[derive(Debug, PartialEq)]
pub enum Change {
    Decided {
        route: String,
        decision: Box<Decision>,
    },
    Removed {
        route: String,
        revision: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("the decision of route {route:?} in etcd is unreadable: {error}")]
    Unreadable { route: String, error: String },
    /// The watch stream ended: a member went away.
    #[error("the watch stream ended")]
    Ended,
    /// etcd did not answer in time.
    #[error("etcd did not answer in time")]
    TimedOut,
    /// The Controller asked to read everything again.
    #[error("reading everything again")]
    Resync,
    /// The node's lease ran out: its report and leadership are gone.
    #[error("this node's lease ran out")]
    LeaseLost,
    /// The watch fell behind a compaction: read everything again.
    #[error("the watch from revision {from} was compacted (oldest kept: {compacted})")]
    Compacted { from: i64, compacted: i64 },
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    keys: Keys,
}

impl Store {
    /// Connects to member `attempt` (modulo their number) of `cluster`.
    /// One member per connection: a client balancing over every member
    /// keeps sending requests to one that died, so a node follows one
    /// member and moves to the next when its streams break. Connecting
    /// does not prove the member answers: the first read does.
    pub async fn connect(cluster: &ClusterConfig, attempt: usize) -> Result<Store, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let member = &cluster.etcd[attempt % cluster.etcd.len()];
        let client = Client::connect([member], Some(options)).await?;
        Ok(Store {
            client,
            keys: Keys::new(&cluster.prefix),
        })
    }

    /// A handle on the same connection, for [`super::leader::Leadership`].
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The cluster's keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Every route's decision, and the revision they were read at (watch
    /// from the next one).
    pub async fn decisions(&mut self) -> Result<(BTreeMap<String, Decision>, i64), StoreError> {
        let prefix = self.keys.routes();
        let got = self
            .client
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = got.header().map_or(0, |h| h.revision());
        let mut decisions = BTreeMap::new();
        for kv in got.kvs() {
            let Some(route) = kv.key_str().ok().and_then(|k| self.keys.route_of(k)) else {
                continue;
            };
            // One unreadable value must not cut the node off from every
            // other route: it is reported and left out (the node keeps
            // its own decision for that route).
            match decode(route, kv.value(), kv.mod_revision()) {
                Ok(decision) => {
                    decisions.insert(route.to_string(), decision);
                }
                Err(error) => tracing::error!(route, "{error}; this node keeps its own"),
            }
        }
        Ok((decisions, revision))
    }

    /// `route`'s decision as etcd holds it now (a linearizable read);
    /// `None` when there is none.
    pub async fn decision(&mut self, route: &str) -> Result<Option<Decision>, StoreError> {
        let got = self.client.get(self.keys.route(route), None).await?;
        got.kvs()
            .first()
            .map(|kv| decode(route, kv.value(), kv.mod_revision()))
            .transpose()
    }

    /// Writes `state` for `route` if the key is still at `seen` (`None`:
    /// only if there is no decision yet) and, for an automatic decision,
    /// if the leader key is still the one created at `leader` (a leader
    /// that lost its lease cannot write after another took over).
    pub async fn write(
        &mut self,
        route: &str,
        state: &RouteState,
        seen: Option<i64>,
        leader: Option<i64>,
        history: &[HistoryEntry],
    ) -> Result<Written, StoreError> {
        let key = self.keys.route(route);
        let value = serde_json::to_vec(state).expect("a RouteState serializes");
        let mut compare = vec![match seen {
            Some(revision) => Compare::mod_revision(key.as_str(), CompareOp::Equal, revision),
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
        }];
        if let Some(created) = leader {
            let leader_key = self.keys.leader();
            compare.push(Compare::create_revision(
                leader_key.as_str(),
                CompareOp::Equal,
                created,
            ));
        }
        // The history of the change is written with it, or not at all.
        let mut puts = vec![TxnOp::put(key.as_str(), value, None)];
        let now = unix_nanos();
        for (i, entry) in history.iter().enumerate() {
            let node = entry.node.as_deref().unwrap_or("-");
            let key = self.keys.history_entry(route, now + i as u128, node);
            let value = serde_json::to_vec(entry).expect("a history entry serializes");
            puts.push(TxnOp::put(key, value, None));
        }
        let txn = Txn::new()
            .when(compare)
            .and_then(puts)
            .or_else([TxnOp::get(key.as_str(), None)]);
        let answer = self.client.txn(txn).await?;
        if answer.succeeded() {
            let revision = answer.header().map_or(0, |h| h.revision());
            return Ok(Written::Done { revision });
        }
        let mut current = None;
        for op in answer.op_responses() {
            if let TxnOpResponse::Get(got) = op {
                if let Some(kv) = got.kvs().first() {
                    current = Some(Box::new(decode(route, kv.value(), kv.mod_revision())?));
                }
            }
        }
        Ok(Written::Lost { current })
    }

    /// Drops `route`'s oldest history entries beyond the newest `keep`
    /// (only once there are `keep / 10` more, so that most writes delete
    /// nothing).
    pub async fn trim_history(&mut self, route: &str, keep: i64) -> Result<(), StoreError> {
        let prefix = self.keys.route_history(route);
        let count = self
            .client
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?
            .count();
        if count <= keep + keep / 10 {
            return Ok(());
        }
        let oldest = self
            .client
            .get(
                prefix.as_str(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Key, SortOrder::Ascend)
                        .with_limit(count - keep),
                ),
            )
            .await?;
        let (Some(first), Some(last)) = (oldest.kvs().first(), oldest.kvs().last()) else {
            return Ok(());
        };
        // The range end is exclusive: just past the last key to drop.
        let mut end = last.key().to_vec();
        end.push(0);
        self.client
            .delete(first.key(), Some(DeleteOptions::new().with_range(end)))
            .await?;
        Ok(())
    }

    /// The newest `limit` history entries of `routes`, oldest first, as
    /// every node wrote them: at most `limit` read per route (newest
    /// first), then merged by time.
    pub async fn history(
        &mut self,
        routes: &[String],
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut entries: Vec<(String, HistoryEntry)> = Vec::new();
        for route in routes {
            let options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
            let got = self
                .client
                .get(self.keys.route_history(route), Some(options))
                .await?;
            // Keys end in `<nanos>-<node>`: that orders every route's
            // entries by time.
            entries.extend(got.kvs().iter().filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let stamp = key.rsplit('/').next()?.to_string();
                Some((stamp, serde_json::from_slice(kv.value()).ok()?))
            }));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let skip = entries.len().saturating_sub(limit);
        Ok(entries.into_iter().skip(skip).map(|(_, e)| e).collect())
    }

    /// Puts this node's report under its lease: it disappears when the
    /// node stops renewing.
    pub async fn report(&mut self, report: &NodeView, lease: i64) -> Result<(), StoreError> {
        let value = serde_json::to_vec(report).expect("a report serializes");
        self.client
            .put(
                self.keys.node(&report.node),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        Ok(())
    }

    /// Every node's report (unreadable ones left out), and the node
    /// holding the leader key.
    pub async fn nodes(&mut self) -> Result<(Vec<NodeView>, Option<String>), StoreError> {
        let got = self
            .client
            .get(self.keys.nodes(), Some(GetOptions::new().with_prefix()))
            .await?;
        let nodes = got
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        let leader = self.client.get(self.keys.leader(), None).await?;
        let leader = (leader.kvs().first())
            .and_then(|kv| kv.value_str().ok())
            .map(str::to_string);
        Ok((nodes, leader))
    }

    /// Watches every route's decision from `revision` on.
    pub async fn watch(&mut self, revision: i64) -> Result<Watch, StoreError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision)
            .with_progress_notify();
        let stream = self
            .client
            .watch(self.keys.routes().as_str(), Some(options))
            .await?;
        Ok(Watch {
            stream,
            keys: self.keys.clone(),
            from: revision,
        })
    }
}

/// The changes to every route's decision, in revision order.
pub struct Watch {
    stream: WatchStream,
    keys: Keys,
    from: i64,
}

impl Watch {
    /// The next batch of changes; `Ok(None)` when the stream ended (a
    /// member went away: watch again from the last revision seen).
    pub async fn next(&mut self) -> Result<Option<Vec<Change>>, StoreError> {
        loop {
            let Some(answer) = self.stream.message().await? else {
                return Ok(None);
            };
            if answer.canceled() {
                return Err(StoreError::Compacted {
                    from: self.from,
                    compacted: answer.compact_revision(),
                });
            }
            let mut changes = Vec::new();
            for event in answer.events() {
                let Some(kv) = event.kv() else { continue };
                let Some(route) = kv.key_str().ok().and_then(|k| self.keys.route_of(k)) else {
                    continue;
                };
                changes.push(match event.event_type() {
                    EventType::Put => match decode(route, kv.value(), kv.mod_revision()) {
                        Ok(decision) => Change::Decided {
                            route: route.to_string(),
                            decision: Box::new(decision),
                        },
                        Err(error) => {
                            tracing::error!(route, "{error}; this node keeps its own");
                            continue;
                        }
                    },
                    EventType::Delete => Change::Removed {
                        route: route.to_string(),
                        revision: kv.mod_revision(),
                    },
                });
            }
            if !changes.is_empty() {
                return Ok(Some(changes));
            }
        }
    }
}

fn decode(route: &str, value: &[u8], revision: i64) -> Result<Decision, StoreError> {
    let state = serde_json::from_slice(value).map_err(|e| StoreError::Unreadable {
        route: route.to_string(),
        error: e.to_string(),
    })?;
    Ok(Decision { state, revision })
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
