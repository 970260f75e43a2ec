//! The admin commands' human output, printed from the typed replies of
//! [`switchyard_control::protocol`]. A reply that does not read into the
//! type its command answers with is printed raw, with a message saying so:
//! never a panic, never half a table of `null`s.

use std::io::{self, Write};

use serde::Serialize;
use switchyard_control::protocol::{
    BackendStatus, ChangeReply, CheckDetail, ClusterStatus, ConfirmReply, DrainReply, GuardStatus,
    HistoryReply, ReloadReply, Reply, Request, Response, RolloutReply, RolloutStatus, RouteStatus,
    SlotStatus, StatusReply, TlsLoadResult, TlsStatus,
};

/// What [`human`] made of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Printed: the reply, or the refusal on stderr.
    Printed,
    /// The result is not of the shape this CLI knows: said on stderr, and
    /// the response printed raw on stdout.
    Unreadable,
}

/// Prints `response` to `request` for a person: a refusal on stderr, a
/// reply on `out`, its warning (applied but not saved) on stderr.
pub(super) fn human(
    out: &mut impl Write,
    request: &Request,
    response: &Response,
) -> io::Result<Outcome> {
    if let Some(error) = &response.error {
        eprintln!(
            "switchyard: refused ({}): {}",
            error.kind.as_str(),
            error.message
        );
        return Ok(Outcome::Printed);
    }
    let result = response.result.clone().unwrap_or_default();
    let reply = match Reply::parse(request, result) {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!(
                "switchyard: cannot read the server's reply to `{}` ({e}); is this CLI of the server's version? The reply as sent:",
                request.name()
            );
            out.write_all(response.to_line().as_bytes())?;
            return Ok(Outcome::Unreadable);
        }
    };
    let printed = print_reply(out, request, &reply);
    // Said on stderr even when stdout is gone.
    if let Some(warning) = reply.warning() {
        eprintln!("warning: {warning}");
    }
    printed.map(|()| Outcome::Printed)
}

fn print_reply(out: &mut impl Write, request: &Request, reply: &Reply) -> io::Result<()> {
    match reply {
        Reply::Status(status) => print_status(out, status),
        Reply::History(history) => print_history(out, history),
        Reply::Drain(drain) => {
            let wait = matches!(request, Request::Drain { wait: true, .. });
            print_drain(out, drain, wait)
        }
        Reply::Rollout(rollout) => print_rollout(out, rollout),
        Reply::Reload(reload) => print_reload(out, reload),
        Reply::Change(change) => print_change(out, change),
        Reply::Confirm(confirm) => print_confirm(out, confirm),
    }
}

/// `app: guard of green confirmed after 120 requests, 0.0 % 5xx`.
fn print_confirm(out: &mut impl Write, confirm: &ConfirmReply) -> io::Result<()> {
    let guard = &confirm.guard;
    writeln!(
        out,
        "{}: guard of {} confirmed after {} requests, {:.1} % 5xx",
        confirm.route,
        guard.slot,
        guard.requests,
        guard.error_rate * 100.0
    )
}

/// `api/blue: drained: 0 requests and 0 upgraded connections in flight`.
fn print_drain(out: &mut impl Write, drain: &DrainReply, wait: bool) -> io::Result<()> {
    let state = if wait && drain.is_empty() {
        "drained: "
    } else {
        ""
    };
    writeln!(
        out,
        "{}/{}: {state}{} requests and {} upgraded connections in flight{}",
        drain.route,
        drain.slot,
        drain.in_flight,
        drain.upgraded,
        if drain.serving {
            " (still serving new traffic)"
        } else {
            ""
        }
    )
}

fn print_rollout(out: &mut impl Write, reply: &RolloutReply) -> io::Result<()> {
    writeln!(
        out,
        "{}: active {}; {}",
        reply.route,
        reply.active,
        reply
            .rollout
            .as_ref()
            .map_or_else(|| "no rollout".to_string(), describe_rollout)
    )
}

fn print_reload(out: &mut impl Write, reload: &ReloadReply) -> io::Result<()> {
    writeln!(
        out,
        "reloaded: generation {}, {} routes",
        reload.generation, reload.routes
    )?;
    if !reload.needs_restart.is_empty() {
        writeln!(
            out,
            "needs restart to apply: {}",
            reload.needs_restart.join(", ")
        )?;
    }
    Ok(())
}

/// `app: now active green, canary blue at 10% (generation 7)`.
fn print_change(out: &mut impl Write, change: &ChangeReply) -> io::Result<()> {
    let canary = match &change.canary {
        None => String::new(),
        Some(c) => format!(", canary {} at {}%", c.slot, c.weight),
    };
    let verb = if change.changed { "now" } else { "unchanged:" };
    writeln!(
        out,
        "{}: {verb} active {}{canary} (generation {})",
        change.route, change.active, change.generation
    )
}

/// `guard of green: 120 requests, 1.7 % 5xx (max 5.0 %), p95 3.1 ms (previous slot 2.9 ms, max +50 %), 41.0s left`.
fn describe_guard(guard: &GuardStatus) -> String {
    let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |m| format!("{m:.1} ms"));
    format!(
        "guard of {}: {} requests, {:.1} % 5xx (max {:.1} %), p95 {} (previous slot {}, max +{:.0} %), {:.1}s left",
        guard.slot,
        guard.requests,
        guard.error_rate * 100.0,
        guard.max_error_rate * 100.0,
        ms(guard.p95_ms),
        ms(guard.baseline_p95_ms),
        guard.max_latency_increase * 100.0,
        guard.left_ms as f64 / 1000.0
    )
}

/// `rollout of green: running, step 2/3 at 50 %, 12.3s left; verdict pass (...)`.
fn describe_rollout(status: &RolloutStatus) -> String {
    let rollout = &status.rollout;
    let mut line = format!(
        "rollout of {}: {}, step {}/{} at {} %",
        rollout.slot,
        wire_name(&rollout.phase),
        status.step_number,
        status.steps_total,
        status.weight
    );
    match &rollout.outcome {
        None => line.push_str(&format!(
            ", {:.1}s left",
            rollout.hold_left_ms as f64 / 1000.0
        )),
        Some(outcome) => line.push_str(&format!(" — {outcome}")),
    }
    if let Some(verdict) = &rollout.verdict {
        line.push_str(&format!(
            "; verdict {} ({})",
            verdict.result, verdict.reason
        ));
    }
    line
}

/// An enum as its wire name (`failback`, `running`).
fn wire_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// `cluster node front-1 (leader)  etcd connected  revision 42  nodes agree`,
/// then a line per node.
fn print_cluster(out: &mut impl Write, cluster: &ClusterStatus) -> io::Result<()> {
    let leading = cluster.leader.as_deref() == Some(cluster.node.as_str());
    let etcd = match (&cluster.error, cluster.connected) {
        (_, true) => "etcd connected".to_string(),
        (Some(error), false) => format!(
            "ETCD UNREACHABLE since {} (serving the last decisions known; commands need --local): {error}",
            cluster.disconnected_since.as_deref().unwrap_or("?")
        ),
        (None, false) => "ETCD UNREACHABLE".to_string(),
    };
    writeln!(
        out,
        "cluster node {}{}  {etcd}  revision {}  {}",
        cluster.node,
        if leading { " (leader)" } else { "" },
        cluster.revision,
        if cluster.agree {
            "nodes agree"
        } else {
            "NODES DIFFER"
        }
    )?;
    for node in &cluster.nodes {
        writeln!(
            out,
            "  node {:<16} revision {:<6} generation {:<6} seen {}{}",
            node.node,
            node.revision,
            node.generation,
            node.last_seen,
            if node.leader { "  leader" } else { "" }
        )?;
    }
    if !cluster.local_only.is_empty() {
        writeln!(
            out,
            "  changed here alone (--local), not in etcd yet: {}",
            cluster.local_only.join(", ")
        )?;
    }
    Ok(())
}

fn print_status(out: &mut impl Write, status: &StatusReply) -> io::Result<()> {
    writeln!(
        out,
        "generation {}  config {}",
        status.generation, status.config.file
    )?;
    if let Some(error) = &status.config.error {
        writeln!(
            out,
            "CONFIG REJECTED (running the last good config):\n{error}"
        )?;
    }
    if !status.config.needs_restart.is_empty() {
        writeln!(
            out,
            "needs restart to apply: {}",
            status.config.needs_restart.join(", ")
        )?;
    }
    if let Some(cluster) = &status.cluster {
        print_cluster(out, cluster)?;
    }
    for target in status.notify.iter().filter(|t| t.failed > 0) {
        writeln!(
            out,
            "NOTIFY {}: {} delivered, {} failed (last: {})",
            target.target,
            target.delivered,
            target.failed,
            target.last_error.as_deref().unwrap_or("?")
        )?;
    }
    for warning in &status.state_warnings {
        writeln!(out, "state file: {warning}")?;
    }
    for route in &status.routes {
        print_route(out, route)?;
    }
    if let Some(tls) = &status.tls {
        writeln!(out)?;
        print_tls(out, tls)?;
    }
    Ok(())
}

/// One route of `status`: its decision, what watches or holds it, its
/// slots and backends.
fn print_route(out: &mut impl Write, route: &RouteStatus) -> io::Result<()> {
    let hosts = if route.hosts.is_empty() {
        "*".to_string()
    } else {
        route.hosts.join(",")
    };
    writeln!(out)?;
    writeln!(
        out,
        "route {}  hosts {hosts}  path {}",
        route.name, route.path_prefix
    )?;
    writeln!(
        out,
        "  active {}  (decided by {} at {})",
        route.active,
        wire_name(&route.decided_by),
        route.changed_at
    )?;
    if let Some(previous) = &route.previous {
        writeln!(out, "  previous {previous}")?;
    }
    if let Some(canary) = &route.canary {
        writeln!(out, "  canary {} at {}%", canary.slot, canary.weight)?;
    }
    if let Some(rollout) = &route.rollout {
        writeln!(out, "  {}", describe_rollout(rollout))?;
    }
    if let Some(maintenance) = &route.maintenance {
        writeln!(out, "  MAINTENANCE (503 to users): {maintenance}")?;
    }
    if let Some(guard) = &route.guard {
        writeln!(out, "  {}", describe_guard(guard))?;
    }
    if let Some(critical) = &route.critical {
        writeln!(out, "  CRITICAL: {critical}")?;
    }
    if let Some(pending) = &route.pending {
        writeln!(
            out,
            "  pending switch to {pending} (applied once it is healthy)"
        )?;
    }
    if let Some(failed) = &route.failed {
        writeln!(
            out,
            "  {failed} failed and was left; only a switch brings traffic back to it"
        )?;
    }
    for slot in &route.slots {
        writeln!(out, "  {}", describe_slot(slot))?;
        for backend in &slot.backends {
            writeln!(out, "    {}", describe_backend(backend))?;
        }
    }
    Ok(())
}

/// `slot green  healthy  3 in flight, 1 upgraded`.
fn describe_slot(slot: &SlotStatus) -> String {
    let mut line = format!("slot {:<12} {:<9}", slot.name, slot.health.as_str());
    line.push_str(&format!(" {} in flight", slot.in_flight));
    if slot.upgraded > 0 {
        line.push_str(&format!(", {} upgraded", slot.upgraded));
    }
    line
}

/// `127.0.0.1:3001  healthy since 2026-…  last check ok 200 in 1.2 ms at 2026-…`.
fn describe_backend(backend: &BackendStatus) -> String {
    let mut line = format!("{:<21} {}", backend.address, wire_name(&backend.state));
    let Some(tracked) = &backend.tracked else {
        return line;
    };
    line.push_str(&format!(" since {}", tracked.since));
    if let Some(check) = &tracked.last_check {
        let verdict = if check.ok { "ok" } else { "FAILED" };
        let detail = match &check.detail {
            CheckDetail::Status {
                status: Some(status),
            } => status.to_string(),
            CheckDetail::Error { error } => error.clone(),
            CheckDetail::Status { status: None } => "tcp connect".to_string(),
        };
        line.push_str(&format!(
            "  last check {verdict} {detail} in {:.1} ms at {}",
            check.latency_ms, check.at
        ));
    }
    line
}

/// The certificates served and the last (re)load.
fn print_tls(out: &mut impl Write, tls: &TlsStatus) -> io::Result<()> {
    for cert in &tls.certificates {
        writeln!(
            out,
            "tls {}{}  names {}  valid until {}",
            cert.cert,
            if cert.default { " (default)" } else { "" },
            cert.names.join(","),
            cert.not_after
        )?;
    }
    let last = &tls.last_load;
    if last.result == TlsLoadResult::Error {
        writeln!(
            out,
            "tls CERTIFICATE RELOAD REJECTED at {} (still serving the above): {}",
            last.at,
            last.error.as_deref().unwrap_or("null")
        )?;
    }
    Ok(())
}

fn print_history(out: &mut impl Write, history: &HistoryReply) -> io::Result<()> {
    for entry in &history.entries {
        let mut line = format!(
            "{} {:<8} {:<10} {:<8}",
            entry.time, entry.trigger, entry.route, entry.action
        );
        if let (Some(from), Some(to)) = (&entry.from, &entry.to) {
            line.push_str(&format!(" {from} -> {to}"));
        }
        line.push_str(&format!("  {}", entry.result));
        if let Some(reason) = &entry.reason {
            line.push_str(&format!("  ({reason})"));
        }
        if let Some(uid) = entry.uid {
            line.push_str(&format!("  uid {uid}"));
        }
        if let Some(node) = &entry.node {
            line.push_str(&format!("  on {node}"));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
