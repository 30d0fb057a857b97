//! A virtual CPS card for the demo, the tests and install checks: the card side of the card
//! profile ([`emulator`]), and its plug into a real pcscd through vsmartcard-vpcd
//! ([`vpcd`]). Development tooling, like `dev_upstream`: the gateway's own card code
//! (`card`) knows nothing of it and talks to it only as to any card, through
//! `card::apdu::Transport`.

pub(crate) mod emulator;
pub(crate) mod token;
pub(crate) mod vpcd;
