//! The update service's decisions (the Microchip OTA System Service behaviours,
//! `protocols/enos_microchip.md` part B): where manifests and images may come from, which
//! signatures they need, which image to take, and when to check again.
//!
//! Contract. Nothing here does I/O or reads a clock. [`UpdatePolicy`] is the one place the
//! secure-OTA rules live, with safe defaults:
//!
//! | rule | default | why |
//! |---|---|---|
//! | `require_signature` | `true` | an image is installed only if a trusted key signed its manifest entry |
//! | `trusted_keys` | none | so with the default, nothing installs until the application names its key |
//! | `allow_downgrade` | `false` | an image not newer than the device's version is never offered |
//! | `danger_allow_http` | `false` | `https://` (or `wss://`) only; plain `http://` only to this computer |
//!
//! [`Source::parse`] reads what a manifest URL serves: an otaweb manifest, or a Microchip
//! OTA service manifest (its one image, for the device's flow, sized by the download: the
//! SHA-256 and signature bind the bytes, so nothing else is trusted less). [`pick`] chooses
//! the newest manifest entry for the device's flow under the policy, and
//! [`Schedule`] times a watcher's checks: every `every` after a check that worked, and after
//! failures a back-off from `retry_first` doubling up to `retry_max` (never past `every`).

use alloc::vec::Vec;

use crate::error::Misuse;
use crate::image::manifest::{FlowKind, Manifest, ManifestEntry, ManifestError, MicrochipEntry};
use crate::image::signature::PublicKey;
use crate::image::verify::VerifyPolicy;
use crate::image::version::Version;
use crate::time::{Millis, Span};

/// What a manifest URL served, as the service reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The images on offer.
    pub manifest: Manifest,
    /// A Microchip manifest states no sizes: its entry's size is only known once the image
    /// is downloaded, and [`Source::sized`] sets it then.
    pub sized_by_download: bool,
}

impl Source {
    /// Reads `text` as an otaweb manifest or, when it is not one, as a Microchip OTA service
    /// manifest whose image is for `flow`. A Microchip entry that asks the device to erase a
    /// version (`EraseVer`) offers nothing. Errors are the otaweb parser's unless the text
    /// is recognisably Microchip's (it has no `otaweb` key), then the Microchip parser's.
    pub fn parse(text: &str, flow: FlowKind) -> Result<Source, ManifestError> {
        match Manifest::parse(text) {
            Ok(manifest) => Ok(Source {
                manifest,
                sized_by_download: false,
            }),
            Err(ManifestError::NotOtaweb) => {
                let entry = MicrochipEntry::parse_manifest(text)?;
                Ok(Source {
                    manifest: Manifest {
                        images: entry
                            .to_manifest_entry("image", flow, 0)
                            .into_iter()
                            .collect(),
                    },
                    sized_by_download: true,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `entry` ready for verification of `downloaded` bytes: as is for an otaweb manifest,
    /// with the download's length for a Microchip one.
    #[must_use]
    pub fn sized(&self, entry: &ManifestEntry, downloaded: usize) -> ManifestEntry {
        let mut entry = entry.clone();
        if self.sized_by_download {
            entry.size = downloaded as u64;
        }
        entry
    }
}

/// The secure-OTA rules of an update (see the module docs for the defaults).
#[derive(Clone, Debug)]
pub struct UpdatePolicy {
    /// Refuse images whose manifest entry carries no signature by a trusted key.
    pub require_signature: bool,
    /// The keys whose signatures are trusted.
    pub trusted_keys: Vec<PublicKey>,
    /// Offer an image that is not newer than the device's version.
    pub allow_downgrade: bool,
    /// Fetch manifests and images over plain `http://` from other computers (development).
    pub danger_allow_http: bool,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            require_signature: true,
            trusted_keys: Vec::new(),
            allow_downgrade: false,
            danger_allow_http: false,
        }
    }
}

impl UpdatePolicy {
    /// The signature rules for [`crate::image::verify::verify_image`]. Refuses a policy
    /// that requires signatures but trusts no key: it could never install anything.
    pub fn verify_policy(&self) -> Result<VerifyPolicy, Misuse> {
        if self.require_signature && self.trusted_keys.is_empty() {
            return Err(Misuse::InvalidArgument(
                "signatures are required but no trusted key is given: pass the public key the \
                 images are signed with, or (development only) turn requireSignature off",
            ));
        }
        Ok(VerifyPolicy::new(
            self.trusted_keys.clone(),
            self.require_signature,
        ))
    }

    /// Whether a manifest or image may be fetched from `url`: `https://` always, `http://`
    /// only to a loopback host unless [`UpdatePolicy::danger_allow_http`].
    pub fn check_url(&self, url: &str) -> Result<(), Misuse> {
        check_transport(url, "https://", "http://", self.danger_allow_http).map_err(|why| {
            Misuse::InvalidArgument(match why {
                Refused::Scheme => "a manifest or image URL must start with https:// or http://",
                Refused::NoHost => "the URL has no host",
                Refused::Plain => {
                    "plain http:// is only allowed to this computer; use https:// (or, for \
                     development only, dangerAllowHttp)"
                }
            })
        })
    }
}

/// Why [`check_transport`] refused a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Neither the secure nor the plain scheme.
    Scheme,
    /// No host after the scheme.
    NoHost,
    /// The plain scheme to a host that is not this computer.
    Plain,
}

/// Whether `url` uses the `secure` scheme, or the `plain` one to a loopback host
/// (127.0.0.0/8, `localhost`, `[::1]`) or with `allow_plain`. Schemes compare without case.
pub fn check_transport(
    url: &str,
    secure: &str,
    plain: &str,
    allow_plain: bool,
) -> Result<(), Refused> {
    let lower = url.to_ascii_lowercase();
    let (is_secure, rest) = if let Some(rest) = lower.strip_prefix(secure) {
        (true, rest)
    } else if let Some(rest) = lower.strip_prefix(plain) {
        (false, rest)
    } else {
        return Err(Refused::Scheme);
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(Refused::NoHost);
    }
    let loopback = host == "localhost"
        || host
            .parse::<core::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if is_secure || loopback || allow_plain {
        Ok(())
    } else {
        Err(Refused::Plain)
    }
}

/// What [`pick`] found in a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick<'a> {
    /// Install this entry.
    Install(&'a ManifestEntry),
    /// The device runs the newest version the manifest has for its flow, or a newer one.
    UpToDate,
    /// The manifest has no image for this flow.
    NothingForFlow,
}

/// Refuses a `current` version (what the application says the device runs) that does not
/// parse in `flow`'s style: [`pick`] would take it for "unknown" and offer the highest
/// version, which may be older than what the device runs, though downgrades are off.
pub fn check_current(flow: FlowKind, current: Option<&str>) -> Result<(), Misuse> {
    match current.map(|c| Version::parse(flow.version_style(), c)) {
        Some(Err(_)) => Err(Misuse::InvalidArgument(
            "currentVersion is not a version of this device's flow, so the updater cannot \
             tell an update from a downgrade; pass what the device reports, or leave it out",
        )),
        _ => Ok(()),
    }
}

/// The entry to install on a device of `flow` running `current` (`None` when the device
/// cannot tell: the highest version then; check a given one with [`check_current`]). With [`UpdatePolicy::allow_downgrade`], the
/// highest version is taken whatever the device runs.
#[must_use]
pub fn pick<'a>(
    manifest: &'a Manifest,
    flow: FlowKind,
    current: Option<&str>,
    policy: &UpdatePolicy,
) -> Pick<'a> {
    let style = flow.version_style();
    let highest = manifest
        .images
        .iter()
        .filter(|e| e.flow == flow)
        .filter_map(|e| Version::parse(style, &e.version).ok().map(|v| (e, v)))
        .fold(
            None::<(&ManifestEntry, Version)>,
            |best, (e, v)| match best {
                Some((_, ref b)) if v.is_newer_than(b) != Ok(true) => best,
                _ => Some((e, v)),
            },
        );
    let Some((entry, version)) = highest else {
        return Pick::NothingForFlow;
    };
    let current = current.and_then(|c| Version::parse(style, c).ok());
    match current {
        Some(c) if !policy.allow_downgrade && version.is_newer_than(&c) != Ok(true) => {
            Pick::UpToDate
        }
        _ => Pick::Install(entry),
    }
}

/// When a watcher checks next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Between checks that worked.
    pub every: Span,
    /// The first pause after a failed check.
    pub retry_first: Span,
    /// The longest pause after failures (capped at `every`).
    pub retry_max: Span,
    failures: u32,
}

impl Schedule {
    /// Checks every `every`, retrying failures after 30 s doubling up to 15 min.
    #[must_use]
    pub fn every(every: Span) -> Self {
        Schedule {
            every,
            retry_first: Span::from_secs(30),
            retry_max: Span::from_secs(15 * 60),
            failures: 0,
        }
    }

    /// Failed checks in a row.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The check at `now` worked: the next is a full period away.
    pub fn succeeded(&mut self, now: Millis) -> Millis {
        self.failures = 0;
        now + self.every
    }

    /// The check at `now` failed: the next comes after the back-off.
    pub fn failed(&mut self, now: Millis) -> Millis {
        let factor = 1u64 << self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let pause = self
            .retry_first
            .0
            .saturating_mul(factor)
            .min(self.retry_max.0)
            .min(self.every.0);
        now + Span(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::parse(include_str!("../../firmware-fixtures/files/manifest.json")).unwrap()
    }

    #[test]
    fn a_source_is_an_otaweb_manifest_or_a_microchip_one_sized_by_its_download() {
        let otaweb = include_str!("../../firmware-fixtures/files/manifest.json");
        let source = Source::parse(otaweb, FlowKind::Gadget).unwrap();
        assert_eq!(source.manifest, manifest());
        let entry = &source.manifest.images[1];
        assert_eq!(
            source.sized(entry, 5).size,
            98_304,
            "an otaweb size is kept"
        );

        let microchip = include_str!("../../firmware-fixtures/files/microchip-ota.json");
        let source = Source::parse(microchip, FlowKind::Gadget).unwrap();
        assert!(source.sized_by_download);
        let [entry] = source.manifest.images.as_slice() else {
            panic!("one image: {source:?}")
        };
        assert_eq!(
            (entry.flow, entry.version.as_str()),
            (FlowKind::Gadget, "2")
        );
        assert_eq!(entry.url, "http://127.0.0.1:8000/app-v2.bin");
        assert_eq!(entry.sha256, manifest().images[1].sha256);
        assert_eq!(entry.signature, manifest().images[1].signature);
        assert_eq!(source.sized(entry, 98_304).size, 98_304);
        let policy = UpdatePolicy::default();
        assert_eq!(
            pick(&source.manifest, FlowKind::Gadget, Some("1"), &policy),
            Pick::Install(entry)
        );
        assert_eq!(
            pick(&source.manifest, FlowKind::Gadget, Some("2"), &policy),
            Pick::UpToDate
        );
    }

    #[test]
    fn a_microchip_erase_offers_nothing_and_bad_sources_say_why() {
        let erase = br#"{"ota": [{"Version": 3, "URL": "https://x.example/a.bin", "Digest": "f54ee1e8539dece67299def1c0ffc811a100f70b468dad0b3483abdcbf1be7ba", "EraseVer": true}]}"#;
        let source = Source::parse(core::str::from_utf8(erase).unwrap(), FlowKind::Gadget).unwrap();
        assert!(source.manifest.images.is_empty());
        assert_eq!(
            pick(
                &source.manifest,
                FlowKind::Gadget,
                Some("1"),
                &UpdatePolicy::default()
            ),
            Pick::NothingForFlow
        );
        // An otaweb manifest's own error stays its own, not Microchip's.
        assert_eq!(
            Source::parse(r#"{"otaweb": 2, "images": []}"#, FlowKind::Gadget),
            Err(ManifestError::UnsupportedFormat { found: 2 })
        );
        assert_eq!(
            Source::parse(r#"{"ota": []}"#, FlowKind::Gadget),
            Err(ManifestError::NoImages)
        );
        assert_eq!(
            Source::parse(r#"{"firmware": 1}"#, FlowKind::Gadget),
            Err(ManifestError::MissingField {
                at: crate::image::manifest::Location::Top,
                field: "ota"
            })
        );
    }

    #[test]
    fn urls_need_tls_except_to_this_computer() {
        let policy = UpdatePolicy::default();
        for ok in [
            "https://updates.example.com/m.json",
            "HTTPS://x.example/a",
            "http://127.0.0.1:8080/fixtures/manifest.json",
            "http://localhost/m.json",
            "http://[::1]:9/m",
            "http://user@127.0.0.2/m",
        ] {
            assert_eq!(policy.check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://updates.example.com/m.json",
            "http://127.0.0.1.example.com/m",
            "http://127.0.0.1@evil.example/m",
            "ftp://127.0.0.1/m",
            "/relative/m.json",
            "https:///m.json",
        ] {
            assert!(policy.check_url(bad).is_err(), "{bad}");
        }
        let dev = UpdatePolicy {
            danger_allow_http: true,
            ..UpdatePolicy::default()
        };
        assert_eq!(dev.check_url("http://updates.example.com/m.json"), Ok(()));
        assert_eq!(
            check_transport("ws://10.0.0.1/mqtt", "wss://", "ws://", false),
            Err(Refused::Plain)
        );
    }

    #[test]
    fn the_default_policy_requires_a_trusted_key() {
        let policy = UpdatePolicy::default();
        assert!(policy.verify_policy().is_err());
        let key = PublicKey::from_pem(include_str!(
            "../../firmware-fixtures/files/keys/test-signing-key.pub.pem"
        ))
        .unwrap();
        let policy = UpdatePolicy {
            trusted_keys: alloc::vec![key],
            ..UpdatePolicy::default()
        };
        let verify = policy.verify_policy().unwrap();
        assert!(verify.require_signature());
        assert_eq!(verify.trusted_keys().len(), 1);
    }

    #[test]
    fn pick_takes_the_newest_for_the_flow_and_never_downgrades_by_default() {
        let m = manifest();
        let policy = UpdatePolicy::default();
        let Pick::Install(e) = pick(&m, FlowKind::Gadget, Some("0"), &policy) else {
            panic!()
        };
        assert_eq!(e.version, "2");
        assert_eq!(
            pick(&m, FlowKind::Gadget, Some("2"), &policy),
            Pick::UpToDate
        );
        assert_eq!(
            pick(&m, FlowKind::Gadget, Some("7"), &policy),
            Pick::UpToDate
        );
        let Pick::Install(e) = pick(&m, FlowKind::Gadget, None, &policy) else {
            panic!()
        };
        assert_eq!(e.version, "2");
        let downgrade = UpdatePolicy {
            allow_downgrade: true,
            ..UpdatePolicy::default()
        };
        assert!(matches!(
            pick(&m, FlowKind::Gadget, Some("7"), &downgrade),
            Pick::Install(e) if e.version == "2"
        ));
        let mut gadget_only = m.clone();
        gadget_only.images.retain(|e| e.flow == FlowKind::Gadget);
        assert_eq!(
            pick(&gadget_only, FlowKind::Dfu, None, &policy),
            Pick::NothingForFlow
        );
    }

    #[test]
    fn a_current_version_that_does_not_parse_is_refused_not_taken_for_unknown() {
        assert_eq!(check_current(FlowKind::Gadget, Some("7")), Ok(()));
        assert_eq!(check_current(FlowKind::Dfu, Some("1.1.1")), Ok(()));
        assert_eq!(check_current(FlowKind::Dfu, None), Ok(()));
        for (flow, bad) in [
            (FlowKind::Gadget, "v2"),
            (FlowKind::Gadget, ""),
            (FlowKind::Dfu, ""),
            (FlowKind::Dfu, "1\n2"),
        ] {
            let refused = check_current(flow, Some(bad)).unwrap_err();
            assert!(
                alloc::format!("{refused}").contains("downgrade"),
                "{flow:?} {bad:?}"
            );
        }
        // What pick would have done with it: the highest, though it is no update.
        let m = manifest();
        assert!(matches!(
            pick(&m, FlowKind::Gadget, Some("v2"), &UpdatePolicy::default()),
            Pick::Install(_)
        ));
    }

    #[test]
    fn schedule_backs_off_then_returns_to_the_period() {
        let mut s = Schedule::every(Span::from_secs(600));
        let t = Millis::ZERO;
        assert_eq!(s.failed(t), t + Span::from_secs(30));
        assert_eq!(s.failed(t), t + Span::from_secs(60));
        assert_eq!(s.failed(t), t + Span::from_secs(120));
        for _ in 0..10 {
            s.failed(t);
        }
        assert_eq!(
            s.failed(t),
            t + Span::from_secs(600),
            "capped at the period"
        );
        assert_eq!(s.failures(), 14);
        assert_eq!(s.succeeded(t), t + Span::from_secs(600));
        assert_eq!(s.failures(), 0);
        assert_eq!(s.failed(t), t + Span::from_secs(30));
    }
}
