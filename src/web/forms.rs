//! Reading what staff type into forms, shared by the pages.

/// What is wrong with a typed amount of money.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoneyError {
    Empty,
    Negative,
    /// Not digits with at most two decimals.
    NotAmount,
    /// More than the caller's ceiling.
    TooHigh,
}

/// An amount as staff type it: `95`, `95.5`, `95.50` or `95,50` (a comma
/// is a decimal point in most of Europe), in cents, at most `max_cents`.
/// No thousands separators, no sign, at most two decimals.
pub fn parse_money(text: &str, max_cents: u64) -> Result<u64, MoneyError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(MoneyError::Empty);
    }
    if t.starts_with('-') {
        return Err(MoneyError::Negative);
    }
    let (whole, frac) = match t.split_once(['.', ',']) {
        Some((w, f)) if (1..=2).contains(&f.len()) => (w, f),
        Some(_) => return Err(MoneyError::NotAmount),
        None => (t, ""),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(frac.is_empty() || digits(frac)) {
        return Err(MoneyError::NotAmount);
    }
    // More digits than any ceiling: refused before they overflow.
    if whole.trim_start_matches('0').len() > 15 {
        return Err(MoneyError::TooHigh);
    }
    let whole: u64 = whole.parse().map_err(|_| MoneyError::NotAmount)?;
    let frac: u64 = format!("{frac:0<2}")
        .parse()
        .map_err(|_| MoneyError::NotAmount)?;
    let cents = whole * 100 + frac;
    if cents > max_cents {
        return Err(MoneyError::TooHigh);
    }
    Ok(cents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_as_staff_type_them() {
        assert_eq!(parse_money("95", 100_000), Ok(9_500));
        assert_eq!(parse_money(" 95.5 ", 100_000), Ok(9_550));
        assert_eq!(parse_money("95,05", 100_000), Ok(9_505));
        assert_eq!(parse_money("0", 100_000), Ok(0));
        assert_eq!(parse_money("", 100), Err(MoneyError::Empty));
        assert_eq!(parse_money("-1", 100), Err(MoneyError::Negative));
        for bad in ["1.234", "1,000.00", "12a", ".5", "1.", "€5"] {
            assert_eq!(
                parse_money(bad, u64::MAX),
                Err(MoneyError::NotAmount),
                "{bad}"
            );
        }
        assert_eq!(parse_money("1000.01", 100_000), Err(MoneyError::TooHigh));
        assert_eq!(
            parse_money(&"9".repeat(40), u64::MAX),
            Err(MoneyError::TooHigh)
        );
    }
}
