//! The filesystem backend. (Being written.)
