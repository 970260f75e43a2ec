//! A slot's health, derived from its backends' states.

use super::BackendState;

/// What a slot can be trusted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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

/// A slot is healthy while at least one of its backends is (DESIGN.md,
/// "Health and fail-back"); unhealthy only when all of them are.
pub fn slot_health(backends: impl IntoIterator<Item = BackendState>) -> SlotHealth {
    let mut any = false;
    let mut all_unhealthy = true;
    for state in backends {
        any = true;
        match state {
            BackendState::Healthy => return SlotHealth::Healthy,
            BackendState::Unknown => all_unhealthy = false,
            BackendState::Unhealthy => {}
        }
    }
    if any && all_unhealthy {
        SlotHealth::Unhealthy
    } else {
        SlotHealth::Unknown
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
    fn no_verdict_yet_is_unknown() {
        assert_eq!(slot_health([Unhealthy, Unknown]), SlotHealth::Unknown);
        assert_eq!(slot_health([]), SlotHealth::Unknown);
    }
}
