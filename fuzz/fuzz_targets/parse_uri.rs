//! `Uri::parse` on arbitrary text. On success the AoR and comparison key are built, and the
//! AoR must itself parse to the same AoR (it is a storage key: normalising twice must not
//! change it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipward::sip::Uri;

fuzz_target!(|text: &str| {
    let Ok(uri) = Uri::parse(text) else {
        return;
    };
    let key = uri.comparison_key();
    assert_eq!(key, uri.comparison_key(), "comparison key is not stable");
    let _ = (uri.transport(), uri.lr(), uri.maddr(), uri.params().count());
    if let Some(aor) = uri.aor() {
        assert!(uri.is_sip());
        let again = Uri::parse(&aor)
            .unwrap_or_else(|e| panic!("AoR {aor:?} of {text:?} does not parse: {e:?}"));
        assert_eq!(again.scheme, uri.scheme);
        assert_eq!(
            again.aor().as_deref(),
            Some(aor.as_str()),
            "AoR not idempotent"
        );
    }
});
