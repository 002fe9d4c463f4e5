#!/usr/bin/env python3
"""Writes the 256-byte register image of a BME280, twice (for QEMU's
at24c-eeprom, which answers I2C reads from it as the chip would) and prints what the
chip's datasheet says a reader must make of it: one line per measurement,
`<name> <value>`, computed here with the datasheet's floating-point
compensation (Bosch BST-BME280-DS002, section 8.1), independently of any
driver.

    bme280.py IMAGE_PATH
"""
import struct
import sys

# Calibration: the datasheet's worked example for T and P (section 8.1's
# figures), plausible factory values for H.
T = (27504, 26435, -1000)
P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
H1, H2, H3, H4, H5, H6 = 75, 362, 0, 324, 50, 30
# Raw ADC values: 20-bit temperature and pressure, 16-bit humidity.
ADC_T, ADC_P, ADC_H = 519888, 415148, 30000


def image():
    reg = bytearray(256)
    reg[0x88:0x88 + 24] = struct.pack("<HhhHhhhhhhhh", *T, *P)
    reg[0xA1] = H1
    reg[0xD0] = 0x60  # chip id: BME280
    struct.pack_into("<h", reg, 0xE1, H2)
    reg[0xE3] = H3
    reg[0xE4] = (H4 >> 4) & 0xFF
    reg[0xE5] = ((H5 & 0x0F) << 4) | (H4 & 0x0F)
    reg[0xE6] = (H5 >> 4) & 0xFF
    reg[0xE7] = H6 & 0xFF
    reg[0xF7:0xFA] = bytes([ADC_P >> 12, (ADC_P >> 4) & 0xFF, (ADC_P & 0x0F) << 4])
    reg[0xFA:0xFD] = bytes([ADC_T >> 12, (ADC_T >> 4) & 0xFF, (ADC_T & 0x0F) << 4])
    struct.pack_into(">H", reg, 0xFD, ADC_H)
    return bytes(reg)


def compensated():
    t1, t2, t3 = T
    var1 = (ADC_T / 16384.0 - t1 / 1024.0) * t2
    var2 = (ADC_T / 131072.0 - t1 / 8192.0) ** 2 * t3
    t_fine = int(var1 + var2)
    temperature = (var1 + var2) / 5120.0

    p1, p2, p3, p4, p5, p6, p7, p8, p9 = P
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0
    var2 = var2 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    pressure = 1048576.0 - ADC_P
    pressure = (pressure - var2 / 4096.0) * 6250.0 / var1
    var1 = p9 * pressure * pressure / 2147483648.0
    var2 = pressure * p8 / 32768.0
    pressure = pressure + (var1 + var2 + p7) / 16.0

    h = t_fine - 76800.0
    h = (ADC_H - (H4 * 64.0 + H5 / 16384.0 * h)) * (
        H2 / 65536.0 * (1.0 + H6 / 67108864.0 * h * (1.0 + H3 / 67108864.0 * h)))
    h = h * (1.0 - H1 * h / 524288.0)
    h = min(max(h, 0.0), 100.0)
    return temperature, pressure / 100.0, h


def main():
    with open(sys.argv[1], "wb") as out:
        # QEMU's block layer sizes a file in 512-byte sectors, so the
        # EEPROM is 512 bytes, and QEMU 10's at24c with 1-byte addresses
        # shifts the register byte into its pointer without clearing it
        # (`cur <<= 8; cur |= data; cur %= rom_size`): bit 8 of the address
        # it reads is bit 0 of where the last access stopped. The image
        # is in both halves, so every register reads the same either way.
        out.write(image() * 2)
    temperature, pressure_hpa, humidity = compensated()
    print(f"temperature {temperature:.4f}")
    print(f"pressure {pressure_hpa:.4f}")
    print(f"humidity {humidity:.4f}")


if __name__ == "__main__":
    main()
