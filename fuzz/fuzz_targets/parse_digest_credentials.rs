//! `Credentials::parse` on arbitrary text (an Authorization or Proxy-Authorization value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipward::sip::Credentials;

fuzz_target!(|text: &str| {
    let Ok(Credentials::Digest(p)) = Credentials::parse(text) else {
        return;
    };
    if let Some(nc) = p.nc_raw {
        assert_eq!(nc.len(), 8);
        assert_eq!(p.nc, u32::from_str_radix(nc, 16).ok());
    } else {
        assert_eq!(p.nc, None);
    }
    // Every borrowed value lies inside the input.
    let range = text.as_ptr() as usize..=text.as_ptr() as usize + text.len();
    for v in [
        p.username,
        p.realm,
        p.nonce,
        p.uri,
        p.response,
        p.algorithm,
        p.cnonce,
        p.qop,
        p.opaque,
    ]
    .into_iter()
    .flatten()
    {
        assert!(range.contains(&(v.as_ptr() as usize)));
        assert!(range.contains(&(v.as_ptr() as usize + v.len())));
    }
});
