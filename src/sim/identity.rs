//! Who the simulated vehicles are: realistic VINs from the brands a European
//! workshop sees, distinct dongle serials, and firmware versions. Pure and
//! deterministic from the lot's seed, so a demo or a test shows the same
//! vehicles every time.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::Rng;

use crate::link::message::{Firmware, Vin, BROADCAST};

/// A manufacturer identifier and the model codes (VIN positions 4 to 8) the
/// simulator draws from. Model codes are plausible, not a catalogue.
struct Make {
    wmi: &'static str,
    /// Relative frequency on the lot.
    weight: u32,
    models: &'static [&'static str],
    plants: &'static [u8],
}

const MAKES: &[Make] = &[
    Make {
        wmi: "WVW",
        weight: 22,
        models: &["ZZZAU", "ZZZ3C", "ZZZAW", "ZZZ5N"],
        plants: b"WEP",
    },
    Make {
        wmi: "WV1",
        weight: 4,
        models: &["ZZZ2K", "ZZZSY"],
        plants: b"HX",
    },
    Make {
        wmi: "WV2",
        weight: 5,
        models: &["ZZZ7H", "ZZZST"],
        plants: b"H",
    },
    Make {
        wmi: "WF0",
        weight: 12,
        models: &["XXXGC", "XXXJA", "XXXTT"],
        plants: b"LKW",
    },
    Make {
        wmi: "VF1",
        weight: 9,
        models: &["RJA00", "RFB00", "RJB00"],
        plants: b"VEP",
    },
    Make {
        wmi: "WBA",
        weight: 8,
        models: &["8E910", "JA510", "21EF0"],
        plants: b"FGN",
    },
    Make {
        wmi: "YV1",
        weight: 6,
        models: &["ZWA8U", "XZK7V", "UZA8V"],
        plants: b"1G",
    },
    Make {
        wmi: "TMB",
        weight: 14,
        models: &["JG7NE", "JJ9NP", "GC9NU"],
        plants: b"0PX",
    },
    Make {
        wmi: "ZFA",
        weight: 8,
        models: &["31200", "33400", "35600"],
        plants: b"JT",
    },
    Make {
        wmi: "VSS",
        weight: 12,
        models: &["ZZZKJ", "ZZZ5F", "ZZZKL"],
        plants: b"RM",
    },
];

/// Firmware versions in the field, newest last.
const FIRMWARE: &[Firmware] = &[
    Firmware(1, 4, 2),
    Firmware(1, 5, 0),
    Firmware(1, 5, 3),
    Firmware(2, 0, 1),
];

/// One simulated vehicle and its dongle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub device_id: u64,
    /// `None` for a unit that does not know its VIN (HELLO carries zeros).
    pub vin: Option<Vin>,
    pub model_year: u16,
    pub firmware: Firmware,
}

/// VIN position-10 model year codes, 2010 onwards (ISO 3779 cycle: the
/// letters I, O, Q, U, Z and the digit 0 are never used).
const YEAR_CODES: &[u8] = b"ABCDEFGHJKLMNPRSTVWXY123456789";

fn year_code(year: u16) -> u8 {
    let i = year.saturating_sub(2010) as usize % YEAR_CODES.len();
    YEAR_CODES[i]
}

/// Value of a VIN character in the check-digit sum (49 CFR 565.15).
fn transliterate(c: u8) -> Option<u32> {
    Some(match c {
        b'0'..=b'9' => (c - b'0') as u32,
        b'A' | b'J' => 1,
        b'B' | b'K' | b'S' => 2,
        b'C' | b'L' | b'T' => 3,
        b'D' | b'M' | b'U' => 4,
        b'E' | b'N' | b'V' => 5,
        b'F' | b'W' => 6,
        b'G' | b'P' | b'X' => 7,
        b'H' | b'Y' => 8,
        b'R' | b'Z' => 9,
        _ => return None,
    })
}

/// The check digit (position 9) a VIN should carry, or `None` if the VIN
/// holds a character VINs never use (I, O, Q, lower case...).
pub fn vin_check_digit(vin: &[u8; 17]) -> Option<u8> {
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    let mut sum = 0;
    for (c, w) in vin.iter().zip(WEIGHTS) {
        sum += transliterate(*c)? * w;
    }
    Some(match sum % 11 {
        10 => b'X',
        d => b'0' + d as u8,
    })
}

/// A VIN of a weighted-random make with a valid check digit.
pub fn random_vin(rng: &mut StdRng, model_year: u16) -> Vin {
    let total: u32 = MAKES.iter().map(|m| m.weight).sum();
    let mut pick = rng.random_range(0..total);
    let make = MAKES
        .iter()
        .find(|m| {
            if pick < m.weight {
                true
            } else {
                pick -= m.weight;
                false
            }
        })
        .unwrap_or(&MAKES[0]);
    let model = make.models[rng.random_range(0..make.models.len())];
    let mut v = [b'0'; 17];
    v[..3].copy_from_slice(make.wmi.as_bytes());
    v[3..8].copy_from_slice(model.as_bytes());
    v[9] = year_code(model_year);
    v[10] = make.plants[rng.random_range(0..make.plants.len())];
    let serial: u32 = rng.random_range(0..1_000_000);
    v[11..].copy_from_slice(format!("{serial:06}").as_bytes());
    v[8] = vin_check_digit(&v).unwrap_or(b'X');
    Vin(v)
}

/// Draws `n` identities. Device ids are distinct serials with a "CC" prefix
/// (never 0 and never the broadcast id); about one unit in twelve does not
/// know its VIN, chosen by `unknown_vin`.
pub fn draw_identities(
    rng: &mut StdRng,
    n: usize,
    this_year: u16,
    unknown_vin: impl Fn(usize) -> bool,
) -> Vec<Identity> {
    let mut seen = HashSet::with_capacity(n);
    (0..n)
        .map(|i| {
            let device_id = loop {
                let id = 0x4343_0000_0000_0000 | (rng.random::<u64>() & 0xFFFF_FFFF_FFFF);
                if id != BROADCAST && seen.insert(id) {
                    break id;
                }
            };
            let model_year = this_year - rng.random_range(0..14u16);
            let vin = random_vin(rng, model_year);
            let firmware = FIRMWARE[rng.random_range(0..FIRMWARE.len())];
            Identity {
                device_id,
                vin: (!unknown_vin(i)).then_some(vin),
                model_year,
                firmware,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn check_digit_matches_a_published_example() {
        // The worked example of 49 CFR 565 / Wikipedia "VIN": 1M8GDM9AXKP042788.
        let vin: [u8; 17] = *b"1M8GDM9AXKP042788";
        assert_eq!(vin_check_digit(&vin), Some(b'X'));
        assert_eq!(
            vin_check_digit(b"1M8GDM9AXKP04278O"),
            None,
            "O is never used"
        );
    }

    #[test]
    fn drawn_vins_are_valid_and_from_known_makes() {
        let mut rng = StdRng::seed_from_u64(7);
        let ids = draw_identities(&mut rng, 300, 2026, |i| i % 12 == 11);
        let devices: HashSet<u64> = ids.iter().map(|i| i.device_id).collect();
        assert_eq!(devices.len(), 300, "device ids are distinct");
        assert_eq!(ids.iter().filter(|i| i.vin.is_none()).count(), 25);
        let mut wmis = HashSet::new();
        for id in &ids {
            assert!((2013..=2026).contains(&id.model_year));
            let Some(vin) = id.vin else { continue };
            assert_eq!(vin_check_digit(&vin.0), Some(vin.0[8]), "{vin}");
            assert_eq!(vin.0[9], year_code(id.model_year));
            assert!(Vin::parse(vin.as_str()).is_some());
            wmis.insert(vin.wmi().to_string());
        }
        assert!(wmis.len() >= 8, "several brands on the lot: {wmis:?}");
    }

    #[test]
    fn year_codes_follow_the_standard_cycle() {
        assert_eq!(year_code(2018), b'J');
        assert_eq!(year_code(2023), b'P');
        assert_eq!(year_code(2026), b'T');
    }
}
