//! The embedded backend. (Being written.)
