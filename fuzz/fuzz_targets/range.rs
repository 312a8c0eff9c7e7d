//! `Range` (`wharf_registry::ByteRange::parse`, blob GETs) and
//! `Content-Range` (`wharf_api::parse_content_range`, chunked uploads):
//! never panic; accepted values follow the grammar (`bytes=a-b`, `a <= b`),
//! render back to the same value, and resolve to a range inside the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_registry::ByteRange;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(r) = ByteRange::parse(s) {
        let rendered = match r {
            ByteRange::From(a) => format!("bytes={a}-"),
            ByteRange::FromTo(a, b) => {
                assert!(a <= b, "{s:?}");
                format!("bytes={a}-{b}")
            }
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        };
        assert_eq!(ByteRange::parse(&rendered), Some(r), "{s:?}");
        for size in [0u64, 1, 7, 1 << 20, u64::MAX] {
            if let Ok(range) = r.resolve(size) {
                assert!(range.start < range.end && range.end <= size, "{s:?} {size}");
            }
        }
    }
    if let Ok((start, len)) = wharf_api::parse_content_range(s) {
        assert!(len >= 1, "{s:?}");
        let end = start.checked_add(len - 1).expect("end overflows");
        let rendered = format!("{start}-{end}");
        assert_eq!(
            wharf_api::parse_content_range(&rendered).ok(),
            Some((start, len)),
            "{s:?}"
        );
    }
});
