//! Kubernetes resource quantities (`128Mi`, `500m`, `1.5`, `2e3`), as apimachinery's
//! `resource.Quantity` parses them, read as an exact number of nano-units. Written here: no
//! maintained crate parses them (k8s-openapi keeps them as strings).

/// A quantity in units of 10^-9 (nano-units): exact for every suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i128);

/// Why a string is not a quantity (apimachinery's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError;

const NANO: i128 = 1_000_000_000;
/// Beyond this a quantity means nothing for a container (and arithmetic would overflow).
const LIMIT: i128 = 1 << 100;

impl Quantity {
    /// Parses `s` as upstream's grammar has it: a signed decimal number, then one binary
    /// suffix (`Ki`..`Ei`), decimal suffix (`n u m "" k M G T P E`) or exponent (`e3`, `E-2`).
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let split = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(split);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(QuantityError);
        }
        let (exp10, exp2): (i32, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            _ => {
                let exp = suffix
                    .strip_prefix(['e', 'E'])
                    .filter(|e| {
                        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                    })
                    .ok_or(QuantityError)?;
                (exp.parse::<i32>().map_err(|_| QuantityError)?, 0)
            }
        };
        // digits * 10^(9 + exp10 - frac digits) * 2^exp2, rounded up when it has a
        // fraction of a nano-unit, as upstream rounds up to its smallest scale.
        let mut mantissa: i128 = 0;
        for b in whole.bytes().chain(frac.bytes()) {
            mantissa = mantissa * 10 + i128::from(b - b'0');
            if mantissa > LIMIT {
                return Err(QuantityError);
            }
        }
        let frac_len = i32::try_from(frac.len()).map_err(|_| QuantityError)?;
        let scale = 9 + exp10 - frac_len;
        let mut value = mantissa;
        if mantissa == 0 {
            return Ok(Quantity(0));
        }
        if scale > 40 {
            return Err(QuantityError);
        }
        if scale >= 0 {
            for _ in 0..scale {
                value = value
                    .checked_mul(10)
                    .filter(|v| *v <= LIMIT)
                    .ok_or(QuantityError)?;
            }
        } else {
            let mut divisor: i128 = 1;
            for _ in 0..(-scale).min(40) {
                divisor *= 10;
            }
            value = if -scale > 40 {
                i128::from(value > 0)
            } else {
                (value + divisor - 1) / divisor
            };
        }
        value = value
            .checked_mul(1i128 << exp2)
            .filter(|v| *v <= LIMIT)
            .ok_or(QuantityError)?;
        Ok(Quantity(if negative { -value } else { value }))
    }

    /// The quantity in whole units, rounded up (bytes of memory).
    pub fn ceil_units(self) -> i128 {
        self.0.div_euclid(NANO) + i128::from(self.0.rem_euclid(NANO) != 0)
    }

    /// The quantity in thousandths, rounded up (millicores of CPU).
    pub fn ceil_millis(self) -> i128 {
        let milli = NANO / 1000;
        self.0.div_euclid(milli) + i128::from(self.0.rem_euclid(milli) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn units(s: &str) -> i128 {
        Quantity::parse(s).expect(s).ceil_units()
    }

    fn millis(s: &str) -> i128 {
        Quantity::parse(s).expect(s).ceil_millis()
    }

    #[test]
    fn suffixes_and_exponents() {
        assert_eq!(units("128Mi"), 128 << 20);
        assert_eq!(units("1Gi"), 1 << 30);
        assert_eq!(units("1G"), 1_000_000_000);
        assert_eq!(units("64k"), 64_000);
        assert_eq!(units("1.5Ki"), 1536);
        assert_eq!(units("2e3"), 2000);
        assert_eq!(units("2E-3"), 1, "rounded up");
        assert_eq!(millis("500m"), 500);
        assert_eq!(millis("0.5"), 500);
        assert_eq!(millis("1"), 1000);
        assert_eq!(millis(".25"), 250);
        assert_eq!(millis("2."), 2000);
        assert_eq!(millis("100u"), 1, "rounded up");
        assert_eq!(millis("+1"), 1000);
        assert_eq!(millis("-1"), -1000);
        assert_eq!(units("0"), 0);
    }

    #[test]
    fn what_is_not_a_quantity() {
        for bad in [
            "",
            ".",
            "Mi",
            "1.2.3",
            "1Mb",
            "1 Mi",
            "1e",
            "1e+",
            "1ee3",
            "--1",
            "1Mi2",
            "1e999999",
            "99999999999999999999999999999999999999999Ei",
        ] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_string_parses_or_fails_without_panicking(s in "\\PC{0,24}") {
            let _ = Quantity::parse(&s);
        }

        #[test]
        fn whole_numbers_with_binary_suffixes_are_exact(n in 0u32..1_000_000, i in 0usize..4) {
            let (suffix, shift) = [("", 0), ("Ki", 10), ("Mi", 20), ("Gi", 30)][i];
            prop_assert_eq!(units(&format!("{n}{suffix}")), i128::from(n) << shift);
        }

        #[test]
        fn millis_round_trip(m in 0u32..10_000_000) {
            prop_assert_eq!(millis(&format!("{m}m")), i128::from(m));
        }
    }
}
