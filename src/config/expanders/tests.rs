use super::*;
use crate::config::{Config, Overrides, from_text};

const HEAD: &str = "[device]\nid = \"pi\"\n\
    [[expander]]\nname = \"mcp0\"\nchip = \"mcp23017\"\naddress = 0x21\ninterrupt = 24\n\
    [[expander]]\nname = \"pcf\"\nchip = \"PCF8575\"\n";

fn parse(rest: &str) -> Result<Config, String> {
    from_text(&format!("{HEAD}{rest}"), None, &Overrides::default()).map_err(|e| e.to_string())
}

#[test]
fn pins_name_their_expander_and_the_chips_own_pin_names() {
    let c = parse(
        "[[input]]\nname = \"door\"\npin = \"mcp0:gpb3\"\npull = \"up\"\n\
         [[output]]\nname = \"relay\"\npin = \"pcf:P17\"\nsafe_state = \"off\"\n\
         [[output]]\nname = \"led\"\npin = 27\n",
    )
    .unwrap();
    let e = &c.board.expanders;
    assert_eq!(
        (e[0].chip, e[0].address, e[0].bus),
        (ExpanderChip::Mcp23017, 0x21, 1)
    );
    assert_eq!(e[0].interrupt, Some(24));
    // With an interrupt line the poll is only a safety net.
    assert_eq!(e[0].poll_interval, Duration::from_secs(1));
    assert_eq!(
        (e[1].address, e[1].poll_interval),
        (0x20, Duration::from_millis(50))
    );
    let door = c.inputs[0].pin.expander().unwrap();
    assert_eq!(
        (door.expander, door.bit, door.label.as_str()),
        (0, 11, "mcp0:B3")
    );
    let relay = c.outputs[0].pin.expander().unwrap();
    assert_eq!(
        (relay.expander, relay.bit, relay.label.as_str()),
        (1, 15, "pcf:P17")
    );
    assert_eq!(c.outputs[1].pin, PinAt::Gpio(27));
    assert_eq!(c.outputs[0].pin.to_string(), "pcf:P17");
}

#[test]
fn what_an_expander_pin_cannot_be_is_refused_by_name() {
    for (rest, words) in [
        (
            "[[input]]\nname = \"a\"\npin = \"mcp1:A0\"\n",
            "expander \"mcp1\", which is not configured; the expanders are \"mcp0\", \"pcf\"",
        ),
        (
            "[[input]]\nname = \"a\"\npin = \"mcp0:C0\"\n",
            "\"C0\" is not a pin of \"mcp0\" (MCP23017); its pins are A0 to B7",
        ),
        (
            "[[input]]\nname = \"a\"\npin = \"pcf:P8\"\n",
            "its pins are P00 to P17",
        ),
        (
            "[[input]]\nname = \"a\"\npin = \"door\"\n",
            "is not a pin; give a BCM GPIO number",
        ),
        (
            "[[input]]\nname = \"a\"\npin = \"mcp0:A0\"\n[[output]]\nname = \"b\"\npin = \"mcp0:a0\"\n",
            "mcp0:A0 is already used by \"a\"",
        ),
        (
            "[[input]]\nname = \"a\"\npin = \"mcp0:A0\"\ncount = true\n",
            "pulses between two reads would be lost",
        ),
        (
            "[[input]]\nname = \"a\"\npin = \"mcp0:A0\"\npull = \"down\"\n",
            "has no pull-down",
        ),
        (
            "[[input]]\nname = \"a\"\npin = \"mcp0:A0\"\npoll_interval = \"1s\"\n",
            "the expander's own poll_interval",
        ),
        (
            "[[output]]\nname = \"a\"\npin = \"mcp0:A0\"\npwm = true\n",
            "a MCP23017 has no PWM",
        ),
        (
            "[[input]]\nname = \"a\"\npin = 24\n",
            "GPIO24 is already used by \"expander \\\"mcp0\\\"'s interrupt\"",
        ),
        (
            "[board]\nunplugged = \"/tmp/x\"\n",
            "only on the simulated board",
        ),
        (
            "[board]\nkind = \"sim\"\nwires = [[\"mcp0:A0\", 17]]\n[[output]]\nname = \"a\"\npin = \"mcp0:A0\"\n[[input]]\nname = \"b\"\npin = 17\n",
            "joins a GPIO to an expander's pin",
        ),
    ] {
        let e = parse(rest).unwrap_err();
        assert!(e.contains(words), "{rest}\n{e}");
    }
}

#[test]
fn expanders_are_refused_where_they_cannot_be() {
    let base = "[device]\nid = \"pi\"\n[[expander]]\nname = \"x\"\n";
    for (rest, words) in [
        (
            "chip = \"mcp23008\"\n",
            "not an expander pinpost drives; allowed: \"mcp23017\"",
        ),
        ("", "expander[0].chip: missing"),
        (
            "chip = \"pcf8574a\"\naddress = 0x20\n",
            "0x20 is not an address a PCF8574A can have; allowed: 0x38 to 0x3f",
        ),
        ("chip = \"mcp23017\"\nbus = 99\n", "99 is not an I2C bus"),
        (
            "chip = \"mcp23017\"\npoll_interval = \"1ms\"\n",
            "allowed: \"10ms\" to \"10s\"",
        ),
        (
            "chip = \"mcp23017\"\n[[expander]]\nname = \"y\"\nchip = \"pcf8574\"\n",
            "0x20 on bus 1 is already expander[0].address",
        ),
        (
            "chip = \"mcp23017\"\n[[expander]]\nname = \"x\"\nchip = \"pcf8574a\"\n",
            "\"x\" is already expander[0].name",
        ),
    ] {
        let e = from_text(&format!("{base}{rest}"), None, &Overrides::default())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains(words), "{rest}\n{e}");
    }
    let e = from_text(
        "[device]\nid = \"pi\"\n[[expander]]\nname = \"a:b\"\nchip = \"pcf8574\"\n",
        None,
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("contains ':'"), "{e}");
}

#[test]
fn a_pin_that_is_neither_a_number_nor_text_is_said_plainly() {
    let e = parse("[[input]]\nname = \"a\"\npin = 1.5\n").unwrap_err();
    assert!(
        e.contains("a BCM GPIO number (pin = 17) or an expander's pin"),
        "{e}"
    );
}
