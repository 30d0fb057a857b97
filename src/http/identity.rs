//! Who is calling: the desk a workstation's client certificate is mapped to.
//!
//! The TLS layer has already checked that the certificate chains to the workstation CA and
//! is valid for client authentication. Here it is attributed to exactly one configured desk
//! by its subject CN (and, where configured, its SHA-256 pin), or to none.

use std::collections::HashMap;
use std::sync::Arc;

use ring::digest;
use rustls::pki_types::CertificateDer;
use serde::Serialize;

use crate::encoding::{hex, parse_sha256};
use crate::session::DeskConfig;

/// A configured desk.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Desk {
    /// Stable desk id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// PC/SC reader wired to the desk.
    pub reader: String,
    /// Where the PIN is typed (`pinpad`: on the reader, "saisissez votre code sur le lecteur").
    pub pin_entry: crate::session::PinEntry,
    #[serde(skip)]
    workstation_cn: String,
    #[serde(skip)]
    workstation_sha256: Option<[u8; 32]>,
}

/// The workstation certificate presented on a connection, as far as it matters for logs
/// and refusals: never a secret, never patient data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Workstation {
    /// Subject CN, if the certificate has one.
    pub cn: Option<String>,
    /// SHA-256 of the DER certificate, lower-case hex (empty for a demo loopback caller).
    pub sha256: String,
    /// True when `samu-gateway demo` mapped a loopback connection without a certificate
    /// to its desk (the page says so in a banner). Never set outside the demo.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub demo_loopback: bool,
    /// The role this certificate holds, when it is no desk's: by its CN, and by its SHA-256
    /// pin where the configuration gives pins.
    #[serde(skip)]
    pub role: Option<Role>,
}

/// What a certificate mapped to no desk may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A compliance officer (`compliance.officer_cns`).
    Officer,
    /// The regulation software (`integration.cn`).
    Integration,
}

/// A role's certificates: by CN, with the pins one of which it must match if any are set.
#[derive(Debug, Clone)]
struct RoleEntry {
    role: Role,
    pins: Vec<[u8; 32]>,
}

/// The certificates of the roles other than desks, from validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    by_cn: HashMap<String, RoleEntry>,
}

impl Roles {
    /// Officers by CN (each must match one of `officer_pins` when some are given), and the
    /// integration certificate by CN (and its pin when given). Invalid pins were refused by
    /// `configtest`; any left here are skipped.
    pub fn new(
        officer_cns: &[String],
        officer_pins: &[String],
        integration: Option<(&str, Option<&str>)>,
    ) -> Self {
        let pins = |texts: &mut dyn Iterator<Item = &str>| -> Vec<[u8; 32]> {
            texts.filter_map(|t| parse_sha256(t).ok()).collect()
        };
        let officer_pins = pins(&mut officer_pins.iter().map(String::as_str));
        let mut by_cn: HashMap<String, RoleEntry> = officer_cns
            .iter()
            .map(|cn| {
                (
                    cn.clone(),
                    RoleEntry {
                        role: Role::Officer,
                        pins: officer_pins.clone(),
                    },
                )
            })
            .collect();
        if let Some((cn, pin)) = integration {
            by_cn.insert(
                cn.to_owned(),
                RoleEntry {
                    role: Role::Integration,
                    pins: pins(&mut pin.into_iter()),
                },
            );
        }
        Self { by_cn }
    }

    fn of(&self, cn: &str, fingerprint: &[u8; 32]) -> Option<Role> {
        let entry = self.by_cn.get(cn)?;
        (entry.pins.is_empty() || entry.pins.contains(fingerprint)).then_some(entry.role)
    }
}

/// What a connection's client certificate makes of the caller.
#[derive(Debug, Clone)]
pub enum Peer {
    /// No client certificate was presented.
    Anonymous,
    /// A workstation certificate mapped to this desk.
    Desk(Arc<Desk>, Workstation),
    /// A certificate from the workstation CA that no desk accepts.
    Unmapped(Workstation),
}

/// Desks indexed by the workstation identity that may act for them.
#[derive(Debug, Default)]
pub struct DeskDirectory {
    by_cn: HashMap<String, Arc<Desk>>,
    desks: Vec<Arc<Desk>>,
    loopback_desk: Option<Arc<Desk>>,
    roles: Roles,
}

impl DeskDirectory {
    /// Builds the index from validated configuration (CNs are unique there).
    pub fn new(configs: &[DeskConfig]) -> Self {
        let desks: Vec<Arc<Desk>> = configs
            .iter()
            .map(|d| {
                Arc::new(Desk {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    reader: d.reader.clone(),
                    pin_entry: d.pin_entry,
                    workstation_cn: d.workstation_cn.clone(),
                    workstation_sha256: d
                        .workstation_sha256
                        .as_deref()
                        .and_then(|p| parse_sha256(p).ok()),
                })
            })
            .collect();
        let by_cn = desks
            .iter()
            .map(|d| (d.workstation_cn.clone(), d.clone()))
            .collect();
        Self {
            by_cn,
            desks,
            loopback_desk: None,
            roles: Roles::default(),
        }
    }

    /// The same directory recognising `roles` among the certificates no desk accepts.
    pub fn with_roles(mut self, roles: Roles) -> Self {
        self.roles = roles;
        self
    }

    /// Demo only (`samu-gateway demo`; no configuration key can set it): loopback
    /// connections without a certificate act for desk `id`, because a browser on the demo
    /// machine has no client certificate installed.
    pub fn with_demo_loopback_desk(mut self, id: &str) -> Self {
        self.loopback_desk = self.desks.iter().find(|d| d.id == id).cloned();
        self
    }

    /// Every desk, in configuration order.
    pub fn desks(&self) -> &[Arc<Desk>] {
        &self.desks
    }

    /// Attributes a verified client certificate to a desk, or to none.
    pub fn attribute(&self, cert: Option<&CertificateDer<'_>>, remote: std::net::IpAddr) -> Peer {
        let Some(cert) = cert else {
            return match &self.loopback_desk {
                Some(desk) if remote.is_loopback() => Peer::Desk(
                    desk.clone(),
                    Workstation {
                        cn: None,
                        sha256: String::new(),
                        demo_loopback: true,
                        role: None,
                    },
                ),
                _ => Peer::Anonymous,
            };
        };
        let fingerprint: [u8; 32] = digest::digest(&digest::SHA256, cert.as_ref())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]); // SHA-256 always yields 32 bytes; the fallback is unreachable.
        let cn = subject_cn(cert);
        let role = cn.as_deref().and_then(|cn| self.roles.of(cn, &fingerprint));
        let workstation = Workstation {
            cn,
            sha256: hex(&fingerprint),
            demo_loopback: false,
            role: None,
        };
        let desk = workstation.cn.as_ref().and_then(|cn| self.by_cn.get(cn));
        match desk {
            Some(desk) if desk.workstation_sha256.is_none_or(|pin| pin == fingerprint) => {
                Peer::Desk(desk.clone(), workstation)
            }
            _ => Peer::Unmapped(Workstation {
                role,
                ..workstation
            }),
        }
    }
}

/// The subject's one CN as UTF-8. A certificate with none, an unparsable one, or several
/// (which one would "the" CN be? two readers could disagree) cannot be mapped.
fn subject_cn(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut names = parsed.subject().iter_common_name();
    let cn = names.next()?;
    if names.next().is_some() {
        tracing::warn!("workstation certificate with several subject CNs: not mapped");
        return None;
    }
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_pki::Authority;

    const LAN: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
    const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn desk(id: &str, cn: &str, pin: Option<String>) -> DeskConfig {
        DeskConfig {
            id: id.into(),
            name: id.into(),
            reader: format!("{id} reader"),
            workstation_cn: cn.into(),
            workstation_sha256: pin,
            pin_entry: Default::default(),
            pkcs11_token: None,
        }
    }

    #[test]
    fn certificate_is_attributed_to_its_own_desk_only() {
        let ca = Authority::new("Workstation CA").unwrap();
        let a = ca.issue_client("poste-a").unwrap();
        let b = ca.issue_client("poste-b").unwrap();
        let dir = DeskDirectory::new(&[desk("a", "poste-a", None), desk("b", "poste-b", None)]);
        assert!(matches!(dir.attribute(Some(&a.der), LAN), Peer::Desk(d, _) if d.id == "a"));
        assert!(matches!(dir.attribute(Some(&b.der), LAN), Peer::Desk(d, _) if d.id == "b"));
        let x = ca.issue_client("poste-x").unwrap();
        assert!(
            matches!(dir.attribute(Some(&x.der), LAN), Peer::Unmapped(w) if w.cn.as_deref() == Some("poste-x"))
        );
        assert!(matches!(dir.attribute(None, LAN), Peer::Anonymous));
    }

    #[test]
    fn pinned_desk_refuses_another_certificate_with_the_same_cn() {
        let ca = Authority::new("Workstation CA").unwrap();
        let genuine = ca.issue_client("poste-a").unwrap();
        let lookalike = ca.issue_client("poste-a").unwrap();
        let pin = hex(digest::digest(&digest::SHA256, genuine.der.as_ref()).as_ref());
        let dir = DeskDirectory::new(&[desk("a", "poste-a", Some(pin))]);
        assert!(matches!(
            dir.attribute(Some(&genuine.der), LAN),
            Peer::Desk(..)
        ));
        assert!(matches!(
            dir.attribute(Some(&lookalike.der), LAN),
            Peer::Unmapped(_)
        ));
    }

    #[test]
    fn officers_and_the_integration_are_recognised_by_cn_and_by_pin_when_given() {
        let ca = Authority::new("Workstation CA").unwrap();
        let officer = ca.issue_client("conformite-1").unwrap();
        let lookalike = ca.issue_client("conformite-1").unwrap();
        let integration = ca.issue_client("logiciel").unwrap();
        let pin = |issued: &crate::dev_pki::Issued| {
            hex(digest::digest(&digest::SHA256, issued.der.as_ref()).as_ref())
        };
        let role = |dir: &DeskDirectory, issued: &crate::dev_pki::Issued| match dir
            .attribute(Some(&issued.der), LAN)
        {
            Peer::Unmapped(w) => w.role,
            _ => None,
        };
        // By CN alone when no pins are configured.
        let by_cn = DeskDirectory::new(&[]).with_roles(Roles::new(
            &["conformite-1".into()],
            &[],
            Some(("logiciel", None)),
        ));
        assert_eq!(role(&by_cn, &officer), Some(Role::Officer));
        assert_eq!(role(&by_cn, &lookalike), Some(Role::Officer));
        assert_eq!(role(&by_cn, &integration), Some(Role::Integration));
        // With pins, a reissued certificate under the same CN holds no role.
        let integration_pin = pin(&integration);
        let pinned = DeskDirectory::new(&[]).with_roles(Roles::new(
            &["conformite-1".into()],
            &[pin(&officer)],
            Some(("logiciel", Some(integration_pin.as_str()))),
        ));
        assert_eq!(role(&pinned, &officer), Some(Role::Officer));
        assert_eq!(role(&pinned, &lookalike), None);
        assert_eq!(role(&pinned, &integration), Some(Role::Integration));
        let other_integration = ca.issue_client("logiciel").unwrap();
        assert_eq!(role(&pinned, &other_integration), None);
    }

    #[test]
    fn a_certificate_with_several_cns_is_nobody() {
        let ca = Authority::new("Workstation CA").unwrap();
        let both = ca
            .issue_client_with_cns(&["poste-a", "conformite-1"])
            .unwrap();
        let dir = DeskDirectory::new(&[desk("a", "poste-a", None)]).with_roles(Roles::new(
            &["conformite-1".into()],
            &[],
            None,
        ));
        match dir.attribute(Some(&both.der), LAN) {
            Peer::Unmapped(w) => assert!(w.cn.is_none() && w.role.is_none(), "{w:?}"),
            other => panic!("{other:?}"),
        }
        let reversed = ca
            .issue_client_with_cns(&["conformite-1", "poste-a"])
            .unwrap();
        assert!(matches!(
            dir.attribute(Some(&reversed.der), LAN),
            Peer::Unmapped(Workstation { role: None, .. })
        ));
    }

    #[test]
    fn only_the_demo_maps_loopback_without_a_certificate_and_only_loopback() {
        let desks = [desk("a", "poste-a", None)];
        let plain = DeskDirectory::new(&desks);
        assert!(matches!(plain.attribute(None, LOOPBACK), Peer::Anonymous));
        let demo = DeskDirectory::new(&desks).with_demo_loopback_desk("a");
        assert!(matches!(
            demo.attribute(None, LOOPBACK),
            Peer::Desk(d, w) if d.id == "a" && w.demo_loopback
        ));
        assert!(matches!(demo.attribute(None, LAN), Peer::Anonymous));
        let v6 = std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        assert!(matches!(demo.attribute(None, v6), Peer::Desk(..)));
        // A certificate still decides for itself, loopback or not.
        let ca = Authority::new("Workstation CA").unwrap();
        let x = ca.issue_client("poste-x").unwrap();
        assert!(matches!(
            demo.attribute(Some(&x.der), LOOPBACK),
            Peer::Unmapped(_)
        ));
    }
}
