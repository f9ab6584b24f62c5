//! A storm's mix (`--faults reset=5%,stall=1%`): each kind's share of the
//! connections and the slots it gets, and the tally of what each kind's
//! clients met.
//!
//! Where it sits: the storm's configuration and results; the server has no
//! counterpart (it answers faults, it does not inject them).

use super::FaultKind;

/// How many clients of each kind a run has: `--faults reset=5%,stall=1%`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultMix {
    /// Per kind, in [`FaultKind::ALL`] order: the share of connections, 0 to 1.
    shares: [f64; FaultKind::ALL.len()],
}

impl FaultMix {
    /// Parses `KIND=PERCENT%,...`. Each kind at most once, shares from 0 to
    /// 100% that add up to at most 100%.
    pub fn parse(text: &str) -> Result<FaultMix, String> {
        let kinds = FaultKind::ALL.map(FaultKind::name).join(", ");
        let mut mix = FaultMix::default();
        let mut seen = [false; FaultKind::ALL.len()];
        for item in text.split(',') {
            let item = item.trim();
            let Some((name, share)) = item.split_once('=') else {
                return Err(format!(
                    "`{item}` is not KIND=PERCENT% (e.g. reset=5%); kinds: {kinds}"
                ));
            };
            let Some(kind) = FaultKind::ALL.into_iter().find(|kind| kind.name() == name) else {
                return Err(format!("unknown fault kind `{name}`; kinds: {kinds}"));
            };
            let percent = share
                .strip_suffix('%')
                .and_then(|number| number.parse::<f64>().ok())
                .filter(|percent| (0.0..=100.0).contains(percent))
                .ok_or_else(|| {
                    format!("`{share}` for {name} is not a percentage from 0% to 100% (e.g. 5%)")
                })?;
            if std::mem::replace(&mut seen[kind.index()], true) {
                return Err(format!("{name} is given twice"));
            }
            mix.shares[kind.index()] = percent / 100.0;
        }
        let total: f64 = mix.shares.iter().sum();
        if total > 1.0 + 1e-9 {
            return Err(format!(
                "the shares add up to {:.1}%, more than 100%",
                total * 100.0
            ));
        }
        Ok(mix)
    }

    /// The share of connections of `kind`, 0 to 1.
    pub fn share(&self, kind: FaultKind) -> f64 {
        self.shares[kind.index()]
    }

    pub fn is_empty(&self) -> bool {
        self.shares.iter().all(|&share| share == 0.0)
    }

    /// Connection slots per kind out of `connections`: the share rounded,
    /// and at least one for every kind given a share, so a small run still
    /// injects each fault it names.
    pub fn slots(&self, connections: usize) -> [usize; FaultKind::ALL.len()] {
        self.shares.map(|share| {
            if share == 0.0 {
                0
            } else {
                ((share * connections as f64).round() as usize).max(1)
            }
        })
    }
}

/// Per kind: clients opened, answered as documented, and answered wrongly.
#[derive(Clone, Debug, Default)]
pub struct FaultTally {
    pub mix: FaultMix,
    /// Connection slots per kind.
    pub slots: [usize; FaultKind::ALL.len()],
    pub(super) injected: [u64; FaultKind::ALL.len()],
    pub(super) answered: [u64; FaultKind::ALL.len()],
    pub(super) wrong: [u64; FaultKind::ALL.len()],
    first_wrong: [Option<String>; FaultKind::ALL.len()],
}

impl FaultTally {
    /// Nothing counted yet, for a run of `mix` with these `slots`.
    pub(super) fn new(mix: FaultMix, slots: [usize; FaultKind::ALL.len()]) -> FaultTally {
        FaultTally {
            mix,
            slots,
            ..FaultTally::default()
        }
    }

    pub fn injected(&self, kind: FaultKind) -> u64 {
        self.injected[kind.index()]
    }

    pub fn answered(&self, kind: FaultKind) -> u64 {
        self.answered[kind.index()]
    }

    pub fn wrong(&self, kind: FaultKind) -> u64 {
        self.wrong[kind.index()]
    }

    pub fn first_wrong(&self, kind: FaultKind) -> Option<&str> {
        self.first_wrong[kind.index()].as_deref()
    }

    pub fn total_wrong(&self) -> u64 {
        self.wrong.iter().sum()
    }

    pub(in crate::load) fn record_wrong(&mut self, kind: FaultKind, detail: String) {
        self.wrong[kind.index()] += 1;
        self.first_wrong[kind.index()].get_or_insert(detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_parses_shares_by_kind() {
        let mix = FaultMix::parse("reset=5%, halfclose=2.5%,oversize=1%").unwrap();
        assert_eq!(mix.share(FaultKind::Reset), 0.05);
        assert_eq!(mix.share(FaultKind::HalfClose), 0.025);
        assert_eq!(mix.share(FaultKind::Oversize), 0.01);
        assert_eq!(mix.share(FaultKind::Stall), 0.0);
        assert!(!mix.is_empty());
        assert!(FaultMix::parse("stall=0%").unwrap().is_empty());
    }

    #[test]
    fn a_bad_mix_is_refused_with_the_reason() {
        for (text, reason) in [
            ("reset", "is not KIND=PERCENT%"),
            ("", "is not KIND=PERCENT%"),
            ("reset=5%,", "is not KIND=PERCENT%"),
            ("bogus=5%", "unknown fault kind `bogus`"),
            ("reset=5", "`5` for reset is not a percentage"),
            ("reset=-1%", "is not a percentage"),
            ("reset=101%", "is not a percentage"),
            ("reset=NaN%", "is not a percentage"),
            ("reset=5%,reset=1%", "reset is given twice"),
            ("reset=60%,stall=50%", "add up to 110.0%"),
        ] {
            let err = FaultMix::parse(text).unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn every_kind_given_a_share_gets_a_slot() {
        let mix = FaultMix::parse("reset=5%,oversize=1%").unwrap();
        let slots = mix.slots(1000);
        assert_eq!(slots[FaultKind::Reset.index()], 50);
        assert_eq!(slots[FaultKind::Oversize.index()], 10);
        let slots = mix.slots(10);
        assert_eq!(slots[FaultKind::Reset.index()], 1, "0.5 rounds up");
        assert_eq!(slots[FaultKind::Oversize.index()], 1, "at least one");
        assert_eq!(slots[FaultKind::Stall.index()], 0);
    }
}
