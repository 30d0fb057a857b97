//! The OIDs an INS is issued under (docs/domain.md §4): the patient's identifier, and the
//! documents that name it, are read against the same list. Other OIDs of the same arc
//! (the INS-C of older documents) are no INS. A leaf: it uses nothing else from the crate.

/// INS-NIR.
pub const OID_NIR: &str = "1.2.250.1.213.1.4.8";
/// INS-NIA.
pub const OID_NIA: &str = "1.2.250.1.213.1.4.9";
/// INS-NIR, test.
pub const OID_NIR_TEST: &str = "1.2.250.1.213.1.4.10";
/// INS-NIR, demo.
pub const OID_NIR_DEMO: &str = "1.2.250.1.213.1.4.11";
/// Every OID an INS may be issued under (production, test and demo).
pub const INS_OIDS: [&str; 4] = [OID_NIR, OID_NIA, OID_NIR_TEST, OID_NIR_DEMO];
