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

use crate::config::{DeskConfig, hex, parse_sha256};

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
    pub pin_entry: crate::config::PinEntry,
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
        }
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
                    },
                ),
                _ => Peer::Anonymous,
            };
        };
        let fingerprint: [u8; 32] = digest::digest(&digest::SHA256, cert.as_ref())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]); // SHA-256 always yields 32 bytes; the fallback is unreachable.
        let workstation = Workstation {
            cn: subject_cn(cert),
            sha256: hex(&fingerprint),
            demo_loopback: false,
        };
        let desk = workstation.cn.as_ref().and_then(|cn| self.by_cn.get(cn));
        match desk {
            Some(desk) if desk.workstation_sha256.is_none_or(|pin| pin == fingerprint) => {
                Peer::Desk(desk.clone(), workstation)
            }
            _ => Peer::Unmapped(workstation),
        }
    }
}

/// The first subject CN as UTF-8; a certificate with none, or with an unparsable one,
/// cannot be mapped.
fn subject_cn(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::pki::Authority;

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
