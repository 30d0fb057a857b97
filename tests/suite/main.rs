//! The integration suite: one test binary, so that the library and the test harness are
//! built and linked once rather than once per file. Each module is one area (`cargo test
//! --test suite audit_shipping::` runs one); `support` is the harness they share.

#[path = "../support/mod.rs"]
mod support;

mod audit_crash;
mod audit_formats;
mod audit_shipping;
mod audit_trail;
mod break_glass;
mod browser;
mod card_login;
mod card_pcsc;
mod card_pkcs11;
mod cases;
mod compliance;
mod configtest;
mod demo;
mod desk_access;
mod dev_dmp;
mod dmp_client;
mod dmp_gateway;
mod dmp_messages;
mod dmp_vihf;
mod hostile_lan;
mod journald;
mod layering;
mod lifecycle;
mod log_hygiene;
mod monitoring;
mod openapi;
mod summary_cases;
mod summary_cda;
mod summary_fixtures;
mod upstream;
mod web;
