//! A slot's health, derived from its backends' states.

use super::BackendState;

/// What a slot can be trusted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotHealth {
    /// At least one backend is healthy.
    Healthy,
    /// Every backend is unhealthy.
    Unhealthy,
    /// No backend is healthy and at least one has no verdict yet.
    Unknown,
}

impl SlotHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotHealth::Healthy => "healthy",
            SlotHealth::Unhealthy => "unhealthy",
            SlotHealth::Unknown => "unknown",
        }
    }
}

/// A slot is healthy while at least one of its backends is (LIFECYCLE.md,
/// "Health and fail-back"); unhealthy only when all of them are.
pub fn slot_health(backends: impl IntoIterator<Item = BackendState>) -> SlotHealth {
    let mut counts = StateCounts::default();
    for state in backends {
        counts.add(state);
    }
    counts.slot_health()
}

/// How many backends of a slot are in each state: enough to know the
/// slot's health without looking at its backends again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub healthy: usize,
    pub unhealthy: usize,
    pub unknown: usize,
}

impl StateCounts {
    pub fn add(&mut self, state: BackendState) {
        *self.of(state) += 1;
    }

    /// One backend moved from `from` to `to`.
    pub fn moved(&mut self, from: BackendState, to: BackendState) {
        let left = self.of(from);
        *left = left.saturating_sub(1);
        *self.of(to) += 1;
    }

    /// [`slot_health`] of the backends counted.
    pub fn slot_health(&self) -> SlotHealth {
        if self.healthy > 0 {
            SlotHealth::Healthy
        } else if self.unhealthy > 0 && self.unknown == 0 {
            SlotHealth::Unhealthy
        } else {
            SlotHealth::Unknown
        }
    }

    fn of(&mut self, state: BackendState) -> &mut usize {
        match state {
            BackendState::Healthy => &mut self.healthy,
            BackendState::Unhealthy => &mut self.unhealthy,
            BackendState::Unknown => &mut self.unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendState::*;

    #[test]
    fn one_healthy_backend_makes_a_healthy_slot() {
        assert_eq!(
            slot_health([Unhealthy, Healthy, Unknown]),
            SlotHealth::Healthy
        );
    }

    #[test]
    fn all_unhealthy_makes_an_unhealthy_slot() {
        assert_eq!(slot_health([Unhealthy, Unhealthy]), SlotHealth::Unhealthy);
    }

    #[test]
    fn counts_moved_between_states_give_the_health_of_the_states() {
        let all = [Healthy, Unhealthy, Unknown];
        // Every slot of up to four backends, reached by moves from all
        // unknown, agrees with the health of its list of states.
        for n in 0..=4usize {
            for code in 0..3usize.pow(n as u32) {
                let states: Vec<BackendState> = (0..n)
                    .map(|i| all[(code / 3usize.pow(i as u32)) % 3])
                    .collect();
                let mut counts = StateCounts::default();
                (0..n).for_each(|_| counts.add(Unknown));
                for state in &states {
                    counts.moved(Unknown, *state);
                }
                assert_eq!(
                    counts.slot_health(),
                    slot_health(states.clone()),
                    "{states:?}"
                );
            }
        }
    }

    #[test]
    fn no_verdict_yet_is_unknown() {
        assert_eq!(slot_health([Unhealthy, Unknown]), SlotHealth::Unknown);
        assert_eq!(slot_health([]), SlotHealth::Unknown);
    }
}
