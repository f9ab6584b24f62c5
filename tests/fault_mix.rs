//! greeter-load's `--faults` mix at the edge of its sum: the shares may add
//! up to 100% plus the allowance for the rounding of decimal percentages
//! (1e-9 of the whole), the allowance itself included, and no further.

use greeter::load::{FaultKind, FaultMix};

#[test]
fn shares_may_exceed_the_whole_by_the_rounding_allowance_and_no_more() {
    // 0.5 + 0.500000001 is exactly the f64 nearest 1 + 1e-9: the largest
    // total allowed.
    let at_the_edge = FaultMix::parse("slowloris=50%,garbage=50.0000001%")
        .expect("a total within the allowance is accepted");
    assert_eq!(
        at_the_edge.share(FaultKind::Slowloris) + at_the_edge.share(FaultKind::Garbage),
        1.0 + 1e-9
    );
    let error = FaultMix::parse("slowloris=50%,garbage=50.0000002%")
        .expect_err("a total past the allowance is refused");
    assert!(error.contains("more than 100%"), "{error}");
}
