//! Sizes and rates as users write them: `--exclude-larger-than 1G`, `--limit-upload 512`
//! (KiB/s, as restic) or `--limit-upload 2MiB`. Units are binary (K = KiB = 1024 bytes), written
//! in either case, with an optional `B` and, for rates, an optional `/s`.
//!
//! Pure: strings in, byte counts out. It sits at the crate root, beside `error`, because both the
//! backend (rate options) and the command line use it, and the backend may not import `policy`.

/// The multiplier of a unit suffix (`""`, `B`, `K`, `KB`, `KiB`, `M`, ... up to `T`), any case;
/// `None` for anything else.
fn unit_multiplier(unit: &str) -> Option<u64> {
    let unit = unit.to_ascii_lowercase();
    let letter = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    match letter {
        "" => Some(1),
        "k" => Some(1 << 10),
        "m" => Some(1 << 20),
        "g" => Some(1 << 30),
        "t" => Some(1 << 40),
        _ => None,
    }
}

/// Parses `number[unit]` where a bare number counts `bare_unit` bytes; the number may have a
/// fraction (`1.5G`). The result is rounded down to whole bytes.
fn parse_scaled(text: &str, bare_unit: u64) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    let multiplier = if unit.is_empty() {
        Some(bare_unit)
    } else {
        unit_multiplier(unit)
    };
    let value: Option<f64> = number.parse().ok().filter(|value: &f64| value.is_finite());
    match (value, multiplier) {
        (Some(value), Some(multiplier)) => {
            #[allow(clippy::cast_precision_loss)] // a unit is at most 2^40, exact in an f64
            let bytes = value * multiplier as f64;
            if bytes >= 2f64.powi(63) {
                return Err(format!("{text:?} is too large"));
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked above
            Ok(bytes as u64)
        }
        _ => Err(format!(
            "{text:?} is not a size: write it like 500K, 20M, 1.5G or 1T"
        )),
    }
}

/// A size: a number of bytes with an optional binary unit (`4096`, `500K`, `20MiB`, `1.5G`).
///
/// # Errors
/// A one-line message for anything else, or a size of zero.
pub fn parse_size(text: &str) -> Result<u64, String> {
    match parse_scaled(text, 1)? {
        0 => Err(format!("{text:?}: the size must be above zero")),
        bytes => Ok(bytes),
    }
}

/// A transfer rate in bytes per second: a bare number is KiB/s (as restic's `--limit-upload`),
/// a number with a unit is that many bytes per second (`2M`, `2MiB/s`, `800K`).
///
/// # Errors
/// A one-line message for anything else, or a rate below one byte per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let without_per_second = text
        .trim()
        .strip_suffix("/s")
        .map_or(text, |rest| rest.trim_end());
    match parse_scaled(without_per_second, 1 << 10) {
        Ok(0) => Err(format!("{text:?}: the rate must be above zero")),
        Ok(rate) => Ok(rate),
        Err(_) => Err(format!(
            "{text:?} is not a rate: give KiB/s as a number (512) or a size per second (2M, 800KiB/s)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units_in_any_spelling() {
        for (text, bytes) in [
            ("1", 1),
            ("4096", 4096),
            ("500K", 500 * 1024),
            ("500k", 500 * 1024),
            ("500KiB", 500 * 1024),
            ("500 kb", 500 * 1024),
            ("20M", 20 << 20),
            ("1.5G", 3 << 29),
            ("2T", 2 << 40),
            ("7B", 7),
            (" 3 MiB ", 3 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn sizes_refuse_nonsense_zero_and_overflow() {
        for text in [
            "", "K", "-1", "1X", "1.2.3", "0", "0K", "1e3", "inf", "NaN", "9999999T", "1KK",
        ] {
            let error = parse_size(text).unwrap_err();
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn rates_are_kibibytes_per_second_unless_a_unit_says_otherwise() {
        for (text, rate) in [
            ("512", 512 * 1024),
            ("1", 1024),
            ("0.5", 512),
            ("2M", 2 << 20),
            ("2MiB/s", 2 << 20),
            ("800K/s", 800 * 1024),
            ("100B", 100),
            ("1g", 1 << 30),
        ] {
            assert_eq!(parse_rate(text), Ok(rate), "{text}");
        }
        for text in ["", "0", "fast", "-5", "1/s/s", "0.0001B", "2Mbit"] {
            let error = parse_rate(text).unwrap_err();
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
