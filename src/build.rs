//! Which build this binary is. Every build of one version says the same `CARGO_PKG_VERSION`;
//! a packaged build also carries the id `.ci/build-package` stamps in at compile time
//! (`SAMU_GATEWAY_BUILD`: the commit's date and hash), so that after an upgrade or a
//! rollback the journal, the trail's `service_started` record, the metrics and `version`
//! say which one runs.

/// The crate's version.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The build id stamped in, if any.
pub(crate) const ID: Option<&str> = option_env!("SAMU_GATEWAY_BUILD");

/// `0.1.0`, or `0.1.0 (build 20261207.1a2b3c4)` for a stamped build.
pub(crate) fn describe() -> String {
    match ID {
        Some(id) => format!("{VERSION} (build {id})"),
        None => VERSION.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_description_starts_with_the_version_and_names_a_stamped_build() {
        let text = super::describe();
        assert!(text.starts_with(super::VERSION), "{text}");
        assert_eq!(
            text.contains("(build "),
            super::ID.is_some_and(|id| text.ends_with(&format!("(build {id})")))
        );
    }
}
