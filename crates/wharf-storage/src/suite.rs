//! The shared behaviour suite. (Being written.)
