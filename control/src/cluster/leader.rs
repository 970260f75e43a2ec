//! Which node takes the automatic decisions (fail-back, guard rollbacks,
//! rollout steps): the one holding `<prefix>/leader`, a key created under
//! that node's lease. A node that stops renewing its lease (crashed,
//! paused, cut off) loses the key when the lease runs out, and another
//! node takes it. Writes of automatic decisions compare the key's
//! `create_revision` too ([`Leadership::held_since`]), so a leader that
//! lost the key cannot write after another took over.

use etcd_client::{
    Client, Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};

use super::store::StoreError;
use super::Keys;

pub struct Leadership {
    client: Client,
    keys: Keys,
    node: String,
    lease: i64,
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
    /// The leader key's `create_revision` while this node holds it.
    held_since: Option<i64>,
}

impl Leadership {
    /// A lease of `ttl_seconds` for `node`; it leads nothing yet.
    pub async fn new(
        mut client: Client,
        keys: Keys,
        node: &str,
        ttl_seconds: i64,
    ) -> Result<Leadership, StoreError> {
        let lease = client.lease_grant(ttl_seconds, None).await?.id();
        let (keeper, answers) = client.lease_keep_alive(lease).await?;
        Ok(Leadership {
            client,
            keys,
            node: node.to_string(),
            lease,
            keeper,
            answers,
            held_since: None,
        })
    }

    /// Takes the leader key if nobody holds it. True when this node leads
    /// (now, or already).
    pub async fn try_lead(&mut self) -> Result<bool, StoreError> {
        let key = self.keys.leader();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.node.as_str(),
                Some(PutOptions::new().with_lease(self.lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let answer = self.client.txn(txn).await?;
        if answer.succeeded() {
            self.held_since = answer.header().map(|h| h.revision());
            return Ok(true);
        }
        let holder = answer.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(got) => got
                .kvs()
                .first()
                .map(|kv| (kv.lease(), kv.create_revision())),
            _ => None,
        });
        self.held_since = match holder {
            Some((lease, created)) if lease == self.lease => Some(created),
            _ => None,
        };
        Ok(self.held_since.is_some())
    }

    /// Renews the lease. False when it is gone: this node leads no more.
    pub async fn renew(&mut self) -> Result<bool, StoreError> {
        self.keeper.keep_alive().await?;
        let alive = matches!(self.answers.message().await?, Some(answer) if answer.ttl() > 0);
        if !alive {
            self.held_since = None;
        }
        Ok(alive)
    }

    /// The node's lease: its report lives under it too.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// The leader key's `create_revision` while this node holds it.
    pub fn held_since(&self) -> Option<i64> {
        self.held_since
    }

    /// Gives the key up at once (a stop), instead of letting it run out.
    pub async fn resign(mut self) -> Result<(), StoreError> {
        self.client.lease_revoke(self.lease).await?;
        Ok(())
    }
}
