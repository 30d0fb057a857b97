use super::*;
use crate::dev_pki::{Authority, CardHolder, write_file};

struct Pki {
    dir: tempfile::TempDir,
    root: Authority,
}

impl Pki {
    fn new() -> Self {
        Self::named("IGC-Santé test root")
    }

    fn named(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Authority::new(name).unwrap();
        write_file(&dir.path().join("root.pem"), root.cert_pem(), 0o644).unwrap();
        Self { dir, root }
    }

    fn card(&self, validity: (i64, i64)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        self.root
            .issue_card(
                &CardHolder::physician("810002813839", "Jeanne", "URGENTISTE"),
                &key,
                validity,
            )
            .unwrap()
            .der
            .to_vec()
    }

    fn crl(&self, name: &str, revoked: &[&[u8]], issued_days_ago: i64) -> PathBuf {
        let serials: Vec<Vec<u8>> = revoked.iter().map(|c| serial(c)).collect();
        let path = self.dir.path().join(name);
        write_file(
            &path,
            &self.root.crl(&serials, issued_days_ago, 7).unwrap(),
            0o644,
        )
        .unwrap();
        path
    }

    fn trust(
        &self,
        crls: Vec<PathBuf>,
        stale_crl: StaleCrlPolicy,
    ) -> Result<CardTrust, TrustError> {
        CardTrust::load(TrustConfig {
            anchors: vec![self.dir.path().join("root.pem")],
            intermediates: vec![],
            crls,
            crl_max_age_hours: 48,
            stale_crl,
            crl_refresh_minutes: 60,
        })
    }
}

fn serial(cert: &[u8]) -> Vec<u8> {
    x509_parser::parse_x509_certificate(cert)
        .unwrap()
        .1
        .raw_serial()
        .to_vec()
}

#[test]
fn good_card_is_trusted_and_names_its_professional() {
    let pki = Pki::new();
    let trust = pki
        .trust(vec![pki.crl("crl.pem", &[], 0)], StaleCrlPolicy::Refuse)
        .unwrap();
    let verified = trust
        .verify(&pki.card((-1, 365)), SystemTime::now())
        .unwrap();
    assert!(!verified.crl_stale);
    let p = verified.professional;
    assert_eq!(p.id_nat, "810002813839");
    assert_eq!(
        (p.given_name.as_deref(), p.surname.as_deref()),
        (Some("Jeanne"), Some("URGENTISTE"))
    );
    assert_eq!(p.certificate_sha256.len(), 64);
}

impl Pki {
    fn signature_card(&self, holder: &str, validity: (i64, i64)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        self.root
            .issue_card_signature(
                &CardHolder::physician(holder, "Jeanne", "URGENTISTE"),
                &key,
                validity,
            )
            .unwrap()
            .der
            .to_vec()
    }
}

/// A card's signature certificate signs (the VIHF) only if it chains to the anchors, is
/// not revoked or expired, and names the holder the card logged in as; the login
/// certificate's client-authentication usage is not asked of it.
#[test]
fn a_signature_certificate_signs_only_for_its_own_holder_and_authority() {
    let pki = Pki::new();
    let revoked = pki.signature_card("810002813839", (-1, 365));
    let trust = pki
        .trust(
            vec![pki.crl("crl.pem", &[&revoked], 0)],
            StaleCrlPolicy::Refuse,
        )
        .unwrap();
    let now = SystemTime::now();
    let good = pki.signature_card("810002813839", (-1, 365));
    let verified = trust.verify_signature(&good, "810002813839", now).unwrap();
    assert_eq!(verified.professional.id_nat, "810002813839");
    // Not a login certificate: no client authentication usage.
    assert!(matches!(
        trust.verify(&good, now),
        Err(TrustError::Usage(_))
    ));
    assert!(matches!(
        trust.verify_signature(&good, "810001234567", now),
        Err(TrustError::Usage(_))
    ));
    assert_eq!(
        trust.verify_signature(&revoked, "810002813839", now),
        Err(TrustError::Revoked)
    );
    assert_eq!(
        trust.verify_signature(
            &pki.signature_card("810002813839", (-30, -1)),
            "810002813839",
            now
        ),
        Err(TrustError::Expired)
    );
    let foreign = Pki::new().signature_card("810002813839", (-1, 365));
    assert_eq!(
        trust.verify_signature(&foreign, "810002813839", now),
        Err(TrustError::UnknownIssuer)
    );
    // The login certificate never stands for the signature one.
    assert!(matches!(
        trust.verify_signature(&pki.card((-1, 365)), "810002813839", now),
        Err(TrustError::Usage(_))
    ));
}

#[test]
fn expired_revoked_and_foreign_cards_are_refused_by_name() {
    let pki = Pki::new();
    let revoked = pki.card((-1, 365));
    let trust = pki
        .trust(
            vec![pki.crl("crl.pem", &[&revoked], 0)],
            StaleCrlPolicy::Refuse,
        )
        .unwrap();
    assert_eq!(
        trust.verify(&pki.card((-30, -1)), SystemTime::now()),
        Err(TrustError::Expired)
    );
    assert_eq!(
        trust.verify(&revoked, SystemTime::now()),
        Err(TrustError::Revoked)
    );
    let foreign = Pki::new().card((-1, 365));
    assert_eq!(
        trust.verify(&foreign, SystemTime::now()),
        Err(TrustError::UnknownIssuer)
    );
    assert!(TrustError::Revoked.message_fr().contains("révoquée"));
}

#[test]
fn stale_crl_is_refused_or_flagged_as_configured() {
    let pki = Pki::new();
    let card = pki.card((-30, 365));
    let old = pki.crl("old.pem", &[], 10);
    let refuse = pki
        .trust(vec![old.clone()], StaleCrlPolicy::Refuse)
        .unwrap();
    assert!(matches!(
        refuse.verify(&card, SystemTime::now()),
        Err(TrustError::StaleCrl {
            limit_hours: 48,
            ..
        })
    ));
    let flag = pki.trust(vec![old], StaleCrlPolicy::AcceptAndFlag).unwrap();
    assert!(flag.verify(&card, SystemTime::now()).unwrap().crl_stale);
}

/// Freshness is that of the CRL covering the card's own chain: another authority's fresh
/// list vouches for nothing about it; of an issuer's lists, the newest is the one that
/// checks the card (an old copy left beside it neither hides a revocation nor ages it).
#[test]
fn stale_crl_is_judged_on_the_cards_own_issuer() {
    let (a, b) = (Pki::named("A test root"), Pki::named("B test root"));
    let trust = |crls: Vec<PathBuf>| {
        CardTrust::load(TrustConfig {
            anchors: vec![a.dir.path().join("root.pem"), b.dir.path().join("root.pem")],
            intermediates: vec![],
            crls,
            crl_max_age_hours: 48,
            stale_crl: StaleCrlPolicy::Refuse,
            crl_refresh_minutes: 60,
        })
        .unwrap()
    };
    let (card_a, card_b) = (a.card((-30, 365)), b.card((-30, 365)));
    let old_a = a.crl("old-a.pem", &[], 10);
    let fresh_a = a.crl("fresh-a.pem", &[], 0);
    let fresh_b = b.crl("fresh-b.pem", &[], 0);
    let mixed = trust(vec![old_a.clone(), fresh_b.clone()]);
    assert!(matches!(
        mixed.verify(&card_a, SystemTime::now()),
        Err(TrustError::StaleCrl { .. })
    ));
    assert!(!mixed.verify(&card_b, SystemTime::now()).unwrap().crl_stale);
    for doubled in [
        trust(vec![fresh_a.clone(), old_a.clone(), fresh_b.clone()]),
        trust(vec![old_a.clone(), fresh_a.clone(), fresh_b.clone()]),
    ] {
        assert!(
            !doubled
                .verify(&card_a, SystemTime::now())
                .unwrap()
                .crl_stale
        );
    }
    let fresh = trust(vec![fresh_a, fresh_b]);
    assert!(!fresh.verify(&card_a, SystemTime::now()).unwrap().crl_stale);
}

/// A card issued by an intermediate (as IGC-Santé's are) logs in when the intermediate is
/// configured, and its TLS chain carries that intermediate after the card's certificate:
/// a peer trusting only the root needs it. A card issued by the root has no other link;
/// a card that could not log in has no chain.
#[test]
fn the_tls_chain_of_a_card_holds_the_intermediates_of_its_path() {
    let pki = Pki::new();
    let intermediate = pki.root.intermediate("IGC-Santé test personnes").unwrap();
    let intermediate_pem = pki.dir.path().join("intermediate.pem");
    write_file(&intermediate_pem, intermediate.cert_pem(), 0o644).unwrap();
    let intermediate_crl = pki.dir.path().join("intermediate.crl");
    write_file(
        &intermediate_crl,
        &intermediate.crl(&[], 0, 7).unwrap(),
        0o644,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let card = intermediate
        .issue_card(
            &CardHolder::physician("810002813839", "Jeanne", "URGENTISTE"),
            &key,
            (-1, 365),
        )
        .unwrap()
        .der
        .to_vec();
    let load = |intermediates: Vec<PathBuf>| {
        CardTrust::load(TrustConfig {
            anchors: vec![pki.dir.path().join("root.pem")],
            intermediates,
            crls: vec![pki.crl("root.crl", &[], 0), intermediate_crl.clone()],
            crl_max_age_hours: 48,
            stale_crl: StaleCrlPolicy::Refuse,
            crl_refresh_minutes: 60,
        })
        .unwrap()
    };
    let now = SystemTime::now();
    let trust = load(vec![intermediate_pem]);
    trust.verify(&card, now).unwrap();
    let chain = trust.authentication_chain(&card, now).unwrap();
    let intermediate_der =
        CertificateDer::from_pem_slice(intermediate.cert_pem().as_bytes()).unwrap();
    assert_eq!(
        chain,
        [CertificateDer::from(card.clone()), intermediate_der]
    );

    let direct = pki.card((-1, 365));
    assert_eq!(
        trust.authentication_chain(&direct, now).unwrap(),
        [CertificateDer::from(direct)]
    );
    // Without the intermediate configured, the card is nobody's.
    let without = load(vec![]);
    assert!(matches!(
        without.authentication_chain(&card, now),
        Err(TrustError::UnknownIssuer)
    ));
    assert!(matches!(
        trust.authentication_chain(&pki.card((-30, -1)), now),
        Err(TrustError::Expired)
    ));
}

/// A card the issuer's newest list revokes is refused whatever the order of the lists
/// configured, under both policies; and a PEM bundle holding several lists is read whole.
/// Before, only the first list of an issuer was read: an older copy listed first, which
/// predates the revocation, let the revoked card in.
#[test]
fn the_newest_list_of_an_issuer_decides_whatever_the_order() {
    let pki = Pki::new();
    let card = pki.card((-30, 365));
    let old = pki.crl("old.pem", &[], 1);
    let new = pki.crl("new.pem", &[&card], 0);
    for policy in [StaleCrlPolicy::Refuse, StaleCrlPolicy::AcceptAndFlag] {
        for crls in [
            vec![old.clone(), new.clone()],
            vec![new.clone(), old.clone()],
        ] {
            let trust = pki.trust(crls, policy).unwrap();
            assert_eq!(
                trust.verify(&card, SystemTime::now()),
                Err(TrustError::Revoked)
            );
        }
    }
    let bundle = pki.dir.path().join("bundle.pem");
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&old).unwrap(),
        std::fs::read_to_string(&new).unwrap()
    );
    std::fs::write(&bundle, text).unwrap();
    let trust = pki.trust(vec![bundle], StaleCrlPolicy::Refuse).unwrap();
    assert_eq!(
        trust.verify(&card, SystemTime::now()),
        Err(TrustError::Revoked)
    );
}

#[test]
fn revocation_must_be_checkable() {
    let pki = Pki::new();
    assert!(matches!(
        pki.trust(vec![], StaleCrlPolicy::Refuse),
        Err(TrustError::Config {
            key: "cards.trust.crls",
            ..
        })
    ));
    // A CRL from another authority does not cover this card's issuer.
    let other = Pki::new();
    let trust = pki
        .trust(vec![other.crl("other.pem", &[], 0)], StaleCrlPolicy::Refuse)
        .unwrap();
    assert_eq!(
        trust.verify(&pki.card((-1, 365)), SystemTime::now()),
        Err(TrustError::RevocationUnknown)
    );
}

#[test]
fn reloaded_crls_take_effect() {
    let pki = Pki::new();
    let card = pki.card((-1, 365));
    let path = pki.crl("crl.pem", &[], 0);
    let trust = pki
        .trust(vec![path.clone()], StaleCrlPolicy::Refuse)
        .unwrap();
    trust.verify(&card, SystemTime::now()).unwrap();
    let serials = vec![serial(&card)];
    std::fs::remove_file(&path).unwrap();
    write_file(&path, &pki.root.crl(&serials, 0, 7).unwrap(), 0o644).unwrap();
    trust.reload_crls().unwrap();
    assert_eq!(
        trust.verify(&card, SystemTime::now()),
        Err(TrustError::Revoked)
    );
}

#[test]
fn rpps_luhn_key() {
    assert!(luhn_ok("79927398713"));
    assert!(!luhn_ok("79927398710"));
    assert!(!luhn_ok("123"));
}

#[test]
fn professions_match_by_code_or_label_and_an_empty_list_allows_all() {
    let mut professional = Professional {
        id_nat: "810002813839".into(),
        id_nat_key_ok: true,
        given_name: None,
        surname: None,
        title: Some(" médecin ".into()),
        certificate_sha256: String::new(),
    };
    let allowed = vec!["10".to_owned(), "Médecin".to_owned()];
    assert!(professional.profession_allowed(&allowed));
    professional.title = Some("10".into());
    assert!(professional.profession_allowed(&allowed));
    professional.title = Some("60".into());
    assert!(!professional.profession_allowed(&allowed));
    assert!(professional.profession_allowed(&[]));
    professional.title = None;
    assert!(!professional.profession_allowed(&allowed));
}

/// A card of an earlier generation (RSA 1024) is refused at insertion with its own code
/// and message, before any PIN: its login's proof of possession could not be checked, and
/// would read as a forged card.
#[test]
fn a_card_key_shorter_than_2048_bits_is_refused_by_name() {
    use rsa::pkcs1::EncodeRsaPublicKey as _;
    /// An RSA public key rcgen can certify (it holds no RSA key under 2048 bits itself).
    struct Short(Vec<u8>);
    impl rcgen::PublicKeyData for Short {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_RSA_SHA256
        }
    }
    let pki = Pki::new();
    let trust = pki
        .trust(vec![pki.crl("crl.pem", &[], 0)], StaleCrlPolicy::Refuse)
        .unwrap();
    let short = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let public = Short(short.to_public_key().to_pkcs1_der().unwrap().into_vec());
    let card = pki
        .root
        .issue_card_for(
            &CardHolder::physician("810002813839", "Jeanne", "URGENTISTE"),
            &public,
            (-1, 365),
        )
        .unwrap();
    assert_eq!(
        trust.verify(&card, SystemTime::now()),
        Err(TrustError::KeyTooShort { bits: 1024 })
    );
    assert!(
        TrustError::KeyTooShort { bits: 1024 }
            .message_fr()
            .contains("ancienne génération")
    );
    // An ECDSA card (the test PKI's) passes: the bound is on RSA keys.
    assert!(
        trust
            .verify(&pki.card((-1, 365)), SystemTime::now())
            .is_ok()
    );
}
