//! Time as a value.
//!
//! The core never reads a clock. The edge (browser timers, the native simulator's virtual
//! clock) passes `now` into every `handle_*` call, and flows answer with deadlines through
//! `poll_timeout`. Milliseconds since an arbitrary origin chosen by the caller are enough:
//! only differences and order matter.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in time, in milliseconds since an origin the caller chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

/// A span of time in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub u64);

impl Millis {
    /// The origin.
    pub const ZERO: Millis = Millis(0);

    /// Milliseconds since the origin.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    #[must_use]
    pub const fn since(self, earlier: Millis) -> Span {
        Span(self.0.saturating_sub(earlier.0))
    }
}

impl Span {
    /// A span of `ms` milliseconds.
    #[must_use]
    pub const fn from_millis(ms: u64) -> Span {
        Span(ms)
    }

    /// A span of `s` seconds.
    #[must_use]
    pub const fn from_secs(s: u64) -> Span {
        Span(s.saturating_mul(1000))
    }

    /// The span in milliseconds.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

impl Add<Span> for Millis {
    type Output = Millis;
    fn add(self, rhs: Span) -> Millis {
        // Saturate: a deadline past the end of time is "never", not a wrap into the past.
        Millis(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign<Span> for Millis {
    fn add_assign(&mut self, rhs: Span) {
        *self = *self + rhs;
    }
}

impl Sub<Millis> for Millis {
    type Output = Span;
    fn sub(self, rhs: Millis) -> Span {
        self.since(rhs)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis(u64::MAX) + Span::from_secs(1), Millis(u64::MAX));
        assert_eq!(Millis(5) - Millis(9), Span(0));
        assert_eq!(Millis(9) - Millis(5), Span(4));
        let mut t = Millis(1_000);
        t += Span::from_millis(250);
        assert_eq!(t, Millis(1_250));
        assert_eq!(Span::from_secs(30).as_millis(), 30_000);
    }

    #[test]
    fn displays_seconds() {
        assert_eq!(alloc::format!("{}", Millis(61_005)), "61.005s");
        assert_eq!(alloc::format!("{}", Span(7)), "7ms");
    }
}
