use super::*;
use crate::header::{Soc, hardware_pwm};

/// A sysfs with one PWM chip whose device-tree node routes `pins` in
/// `function` (the BCM2837's, as Debian's dtb and the `pwm` overlay write it).
fn sysfs(pins: &[u32], function: u32) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("sys/firmware/devicetree/base/soc");
    let gpio = tree.join("gpio@7e200000/pwm0_gpio");
    std::fs::create_dir_all(&gpio).unwrap();
    let be = |v: &[u32]| v.iter().flat_map(|c| c.to_be_bytes()).collect::<Vec<u8>>();
    std::fs::write(gpio.join("phandle"), be(&[0x1f])).unwrap();
    std::fs::write(gpio.join("brcm,pins"), be(pins)).unwrap();
    std::fs::write(gpio.join("brcm,function"), be(&[function])).unwrap();
    let chip = root.path().join("sys/class/pwm/pwmchip0");
    let node = chip.join("device/of_node");
    std::fs::create_dir_all(&node).unwrap();
    std::fs::write(node.join("status"), b"okay\0").unwrap();
    std::fs::write(node.join("pinctrl-0"), be(&[0x1f])).unwrap();
    // An exported channel, as the kernel makes it on `export`.
    let channel = chip.join("pwm0");
    std::fs::create_dir_all(&channel).unwrap();
    for file in ["period", "duty_cycle", "enable"] {
        std::fs::write(channel.join(file), "0\n").unwrap();
    }
    root
}

fn gpio18() -> HardwarePwm {
    hardware_pwm(18, Soc::Bcm283x).unwrap()
}

#[test]
fn a_pin_the_overlay_routes_is_found_with_its_chip_and_channel() {
    let root = sysfs(&[18], 2);
    assert_eq!(
        route(root.path(), 18, gpio18()),
        Route::Routed {
            chip: root.path().join("sys/class/pwm/pwmchip0"),
            channel: 0
        }
    );
}

#[test]
fn debians_own_tree_routes_pwm_to_the_audio_pins_and_says_which_overlay() {
    // bcm2837-rpi-3-b.dtb: PWM0 and PWM1 on GPIO40/41 in ALT0.
    let root = sysfs(&[40, 41], 4);
    let Route::Missing(words) = route(root.path(), 18, gpio18()) else {
        panic!("GPIO18 is not routed")
    };
    assert!(
        words.contains("add `dtoverlay=pwm,pin=18,func=2` to config.txt"),
        "{words}"
    );
    // Routed, but in the wrong function, is not routed either.
    let root = sysfs(&[18], 4);
    assert!(matches!(
        route(root.path(), 18, gpio18()),
        Route::Missing(_)
    ));
    // GPIO12's PWM0 is ALT0.
    let twelve = hardware_pwm(12, Soc::Bcm283x).unwrap();
    assert!(overlay_advice(12, twelve).contains("dtoverlay=pwm,pin=12,func=4"));
}

#[test]
fn a_disabled_pwm_node_or_no_pwm_class_routes_nothing() {
    let root = sysfs(&[18], 2);
    let status = root
        .path()
        .join("sys/class/pwm/pwmchip0/device/of_node/status");
    std::fs::write(status, b"disabled\0").unwrap();
    assert!(matches!(
        route(root.path(), 18, gpio18()),
        Route::Missing(_)
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        route(empty.path(), 18, gpio18()),
        Route::Missing(_)
    ));
}

#[test]
fn duty_and_period_are_written_in_an_order_the_kernel_accepts() {
    let root = sysfs(&[18], 2);
    let chip = root.path().join("sys/class/pwm/pwmchip0");
    let read = |name: &str| std::fs::read_to_string(chip.join("pwm0").join(name)).unwrap();
    let mut pwm = KernelPwm::open(&chip, 0).unwrap();
    pwm.set(0.25, 1000.0).unwrap();
    assert_eq!(
        (read("period"), read("duty_cycle"), read("enable")),
        ("1000000".into(), "250000".into(), "1".into())
    );
    // A shorter period than the duty before: the duty shrinks first.
    pwm.set(0.5, 10_000.0).unwrap();
    assert_eq!(
        (read("period"), read("duty_cycle")),
        ("100000".into(), "50000".into())
    );
    pwm.level(true).unwrap();
    assert_eq!(read("duty_cycle"), "100000");
    pwm.level(false).unwrap();
    assert_eq!(read("duty_cycle"), "0");
}

#[test]
fn a_channel_that_never_appears_is_an_error_in_words() {
    let root = tempfile::tempdir().unwrap();
    let chip = root.path().join("pwmchip0");
    std::fs::create_dir_all(&chip).unwrap();
    // Writing `export` creates a plain file here, and no pwm1/.
    let e = KernelPwm::open(&chip, 1).unwrap_err();
    assert!(e.contains("pwm1/period"), "{e}");
}
