//! Signed configs, applied by the helper on the pretend machine: one with
//! `# breaks` in it never connects.

use super::*;

#[test]
fn a_signed_config_is_checked_written_with_the_files_mode_and_kept() {
    let bench = Bench::new();
    std::fs::set_permissions(
        &bench.plan.config_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let new = "[device]\nid = \"pi-01\"\n\n[outbox]\nmax_age = \"2h\"\n";
    let name = bench.ready_config("pi-01", new);
    let mut pi = bench.machine();
    let did = bench.run(&mut pi);
    let outcome = &did[0].outcome;
    assert_eq!(outcome.kind.as_deref(), Some("config"));
    assert_eq!(
        (outcome.state.as_str(), &outcome.version),
        ("applied", &name)
    );
    assert_eq!(bench.config_now(), new);
    let mode = std::fs::metadata(&bench.plan.config_file)
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o640
    );
    assert_eq!(
        std::fs::read_to_string(bench.plan.dir.join("config.good.toml")).unwrap(),
        GOOD_CONFIG
    );
    assert!(pi.installs.is_empty(), "no package is touched");
    assert!(!bench.journal_left());
    // The same config again: applied already, nothing restarted.
    bench.ready_config("pi-01", new);
    let looks = pi.invocation;
    assert_eq!(bench.run(&mut pi)[0].outcome.state, "applied");
    assert_eq!(pi.invocation, looks);
}

#[test]
fn a_config_that_cannot_connect_is_rolled_back_and_never_applied_again() {
    let bench = Bench::new();
    let broken = "[device]\nid = \"pi-01\"\n# breaks\n";
    let name = bench.ready_config("pi-01", broken);
    let mut pi = bench.machine();
    let did = bench.run(&mut pi);
    let outcome = &did[0].outcome;
    assert_eq!(outcome.state, "rolled back");
    let reason = outcome.reason.as_deref().unwrap();
    assert!(
        reason.contains("did not connect and deliver within 2m"),
        "{reason}"
    );
    assert_eq!(
        bench.config_now(),
        GOOD_CONFIG,
        "the config that ran before is back"
    );
    assert_eq!(bench.rolled_back()[0].version, name);

    bench.ready_config("pi-01", broken);
    let did = bench.run(&mut pi);
    assert_eq!(did[0].outcome.state, "refused");
    assert!(
        did[0]
            .outcome
            .reason
            .as_deref()
            .unwrap()
            .contains("rolled back on this device before")
    );
}

#[test]
fn a_config_the_checker_refuses_or_for_another_device_changes_nothing() {
    let bench = Bench::new();
    let mut pi = bench.machine();
    bench.ready_config(
        "pi-01",
        "[device]\nid = \"pi-01\"\n[outbox]\nmax_age = \"soon\"\n",
    );
    let did = bench.run(&mut pi);
    assert_eq!(did[0].outcome.state, "refused");
    let reason = did[0].outcome.reason.clone().unwrap();
    assert!(
        reason.contains("outbox.max_age"),
        "the checker's words: {reason}"
    );
    bench.ready_config("pi-02", "[device]\nid = \"pi-02\"\n");
    let reason = bench.run(&mut pi)[0].outcome.reason.clone().unwrap();
    assert!(
        reason.contains("signed for pi-02, and this device is pi-01"),
        "{reason}"
    );
    bench.ready_config("pi-01", "[device]\nid = \"pi-09\"\n");
    let reason = bench.run(&mut pi)[0].outcome.reason.clone().unwrap();
    assert!(reason.contains("would make this device pi-09"), "{reason}");
    assert_eq!(bench.config_now(), GOOD_CONFIG);
    assert_eq!(pi.invocation, 1, "the agent was never restarted");
}

#[test]
fn a_power_cut_after_a_config_is_written_is_checked_again_at_boot() {
    let bench = Bench::new();
    let new = "[device]\nid = \"pi-01\"\n# v2\n";
    bench.ready_config("pi-01", new);
    let mut pi = bench.machine();
    pi.cut_at = Some("restart".into());
    bench.run_until_cut(&mut pi);
    assert_eq!(bench.config_now(), new);
    let did = bench.run(&mut pi);
    assert_eq!(did[0].outcome.state, "applied");
    assert!(
        did[0]
            .outcome
            .reason
            .as_deref()
            .unwrap()
            .contains("finished at boot")
    );
}
