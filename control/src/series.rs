//! The recent past of every slot's traffic, for the dashboard's charts:
//! request rate, 5xx rate and p50/p95 latency per interval, the last
//! [`SERIES_POINTS`] intervals. Built from the per-slot counters the request
//! path already keeps ([`StatsSnapshot`]), read by the control plane every
//! [`SERIES_INTERVAL`]: the request path pays nothing for it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::table::StatsSnapshot;

/// How often the counters are read.
pub const SERIES_INTERVAL: Duration = Duration::from_secs(2);
/// How many intervals are kept: 10 minutes at 2 s.
pub const SERIES_POINTS: usize = 300;

/// One interval of one slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The interval's end, Unix milliseconds.
    pub at_ms: u64,
    /// Requests answered per second over the interval.
    pub rps: f64,
    /// Share of answers that were 5xx (0 without requests).
    pub error_rate: f64,
    /// `None` without requests.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// The series of one slot of one route, oldest point first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotSeries {
    pub slot: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteSeries {
    pub route: String,
    pub slots: Vec<SlotSeries>,
}

/// What `/api/series` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesReply {
    pub interval_ms: u64,
    pub routes: Vec<RouteSeries>,
}

#[derive(Debug, Default)]
struct Track {
    last: StatsSnapshot,
    points: VecDeque<Point>,
}

/// Every slot's points. Slots that leave the config leave the book at the
/// next sample.
#[derive(Debug, Default)]
pub struct SeriesBook {
    tracks: BTreeMap<(String, String), Track>,
    last_sample: Option<SystemTime>,
}

impl SeriesBook {
    /// Adds one point per slot of `current` (every configured slot and its
    /// counters now), taken at `now`. A slot seen for the first time gets
    /// its first point at the next sample, when there is an interval to
    /// measure.
    pub fn sample(
        &mut self,
        now: SystemTime,
        current: impl IntoIterator<Item = (String, String, StatsSnapshot)>,
    ) {
        let elapsed = self
            .last_sample
            .and_then(|last| now.duration_since(last).ok())
            .filter(|d| !d.is_zero());
        self.last_sample = Some(now);
        let at_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut kept = BTreeMap::new();
        for (route, slot, snapshot) in current {
            let key = (route, slot);
            let seen = self.tracks.remove(&key);
            let measured = seen.is_some();
            let mut track = seen.unwrap_or_default();
            if let (Some(elapsed), true) = (elapsed, measured) {
                let interval = snapshot.since(&track.last);
                track.points.push_back(point(at_ms, elapsed, &interval));
                while track.points.len() > SERIES_POINTS {
                    track.points.pop_front();
                }
            }
            track.last = snapshot;
            kept.insert(key, track);
        }
        self.tracks = kept;
    }

    /// The points taken after `since_ms` (Unix milliseconds; 0 for all),
    /// routes and slots in name order: a page that has the earlier points
    /// asks only for the new ones.
    pub fn reply(&self, since_ms: u64) -> SeriesReply {
        let mut routes: Vec<RouteSeries> = Vec::new();
        for ((route, slot), track) in &self.tracks {
            let series = SlotSeries {
                slot: slot.clone(),
                points: track
                    .points
                    .iter()
                    .filter(|p| p.at_ms > since_ms)
                    .cloned()
                    .collect(),
            };
            match routes.last_mut() {
                Some(last) if last.route == *route => last.slots.push(series),
                _ => routes.push(RouteSeries {
                    route: route.clone(),
                    slots: vec![series],
                }),
            }
        }
        SeriesReply {
            interval_ms: SERIES_INTERVAL.as_millis() as u64,
            routes,
        }
    }
}

fn point(at_ms: u64, elapsed: Duration, interval: &StatsSnapshot) -> Point {
    // Rounded: a chart needs no more, and the JSON stays short.
    let round = |value: f64, places: i32| {
        let scale = 10f64.powi(places);
        (value * scale).round() / scale
    };
    let millis = |d: Duration| round(d.as_secs_f64() * 1000.0, 3);
    Point {
        at_ms,
        rps: round(interval.requests as f64 / elapsed.as_secs_f64(), 2),
        error_rate: round(interval.error_rate(), 4),
        p50_ms: interval.quantile(0.50).map(millis),
        p95_ms: interval.quantile(0.95).map(millis),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::SlotStats;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    #[test]
    fn each_sample_adds_the_interval_since_the_last_one() {
        let stats = SlotStats::default();
        let mut book = SeriesBook::default();
        let now = |book: &mut SeriesBook, s: u64, stats: &SlotStats| {
            book.sample(at(s), [("app".into(), "blue".into(), stats.snapshot())]);
        };
        now(&mut book, 0, &stats);
        assert!(book.reply(0).routes[0].slots[0].points.is_empty());
        for _ in 0..90 {
            stats.answered(200, Duration::from_millis(2));
        }
        for _ in 0..10 {
            stats.answered(503, Duration::from_millis(40));
        }
        now(&mut book, 5, &stats);
        now(&mut book, 10, &stats);
        let points = &book.reply(0).routes[0].slots[0].points;
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].rps, 20.0);
        assert_eq!(points[0].error_rate, 0.1);
        assert!(points[0].p50_ms.unwrap() >= 2.0 && points[0].p50_ms.unwrap() < 2.5);
        assert!(points[0].p95_ms.unwrap() >= 40.0 && points[0].p95_ms.unwrap() < 50.0);
        assert_eq!(points[1].rps, 0.0);
        assert_eq!(points[1].p95_ms, None);
        assert_eq!(points[1].at_ms - points[0].at_ms, 5_000);
        // Only what is newer than what the page has.
        let newer = book.reply(points[0].at_ms);
        assert_eq!(newer.routes[0].slots[0].points, points[1..]);
    }

    #[test]
    fn the_book_keeps_a_bounded_window_and_forgets_slots_that_left() {
        let mut book = SeriesBook::default();
        let slots = |names: &[&str]| -> Vec<(String, String, StatsSnapshot)> {
            names
                .iter()
                .map(|n| ("app".into(), n.to_string(), StatsSnapshot::default()))
                .collect()
        };
        for s in 0..(SERIES_POINTS as u64 + 10) {
            book.sample(at(s * 5), slots(&["blue", "green"]));
        }
        let reply = book.reply(0);
        assert_eq!(reply.routes[0].slots.len(), 2);
        assert!(reply.routes[0]
            .slots
            .iter()
            .all(|s| s.points.len() == SERIES_POINTS));
        book.sample(at(10_000), slots(&["blue"]));
        assert_eq!(book.reply(0).routes[0].slots.len(), 1);
    }
}
