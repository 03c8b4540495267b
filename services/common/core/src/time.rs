//! Conversions between `google.protobuf.Timestamp` and `chrono` at the API edge.

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};

use crate::ApiError;

pub fn to_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        // Always below 2e9 (leap seconds included), so the conversion cannot fail.
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(i32::MAX),
    }
}

/// A request's timestamp, or `InvalidArgument` naming `field`.
pub fn from_timestamp(
    field: &str,
    value: &prost_types::Timestamp,
) -> Result<DateTime<Utc>, ApiError> {
    let nanos = u32::try_from(value.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .ok_or_else(|| ApiError::invalid(field, "nanos must be 0-999999999"))?;
    DateTime::from_timestamp(value.seconds, nanos)
        .ok_or_else(|| ApiError::invalid(field, "is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_values() {
        let now = Utc::now();
        assert_eq!(from_timestamp("t", &to_timestamp(now)).ok(), Some(now));
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(
            from_timestamp("start_time", &bad)
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("start_time: nanos must be 0-999999999")
        );
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(from_timestamp("end_time", &far).is_err());
    }
}

/// The time, injectable so tests control expiry, policies and ping status.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until told otherwise, for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock {
            now: Mutex::new(at),
        }
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add_signed(by).unwrap_or(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
