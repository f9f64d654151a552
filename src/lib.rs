pub mod sip;
pub mod transaction;
