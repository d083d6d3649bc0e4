//! Reading what staff type into forms and upload, shared by the pages.

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::Multipart;

/// Bytes kept of a small field of a multipart form (the CSRF token, a
/// checkbox): more than any of them holds.
pub const MAX_SMALL_FIELD: usize = 256;

/// A multipart form with one file, as read.
#[derive(Debug, Default)]
pub struct Upload {
    pub csrf: String,
    /// The "check only" box (`dry_run`), when the form has one.
    pub dry_run: bool,
    pub file_name: Option<String>,
    /// The file, up to one byte over the caller's limit (so "too large" is
    /// known without keeping it all).
    pub file: Vec<u8>,
    /// The file's size as sent.
    pub file_len: usize,
    pub has_file: bool,
}

async fn small_field(field: &mut Field<'_>) -> Result<String, MultipartError> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        let room = MAX_SMALL_FIELD.saturating_sub(text.len());
        text.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Reads the whole form (so that the answer reaches the browser), keeping
/// at most `max_file + 1` bytes of the file field `file_field`.
pub async fn read_upload(
    mut form: Multipart,
    file_field: &str,
    max_file: usize,
) -> Result<Upload, MultipartError> {
    let mut up = Upload::default();
    while let Some(mut field) = form.next_field().await? {
        let name = field.name().map(str::to_owned);
        match name.as_deref() {
            Some("csrf") => up.csrf = small_field(&mut field).await?,
            Some("dry_run") => up.dry_run = !small_field(&mut field).await?.trim().is_empty(),
            Some(f) if f == file_field => {
                up.has_file = true;
                up.file_name = field.file_name().map(str::to_owned);
                while let Some(chunk) = field.chunk().await? {
                    up.file_len += chunk.len();
                    let room = (max_file + 1).saturating_sub(up.file.len());
                    up.file.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
            _ => while field.chunk().await?.is_some() {},
        }
    }
    Ok(up)
}

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
