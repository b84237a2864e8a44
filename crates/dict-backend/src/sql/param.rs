//! Bound values: a key part or value as the parameter of its map's type (checked and
//! converted as Dovecot does), and finding the map a key belongs to.

use dict_config::{SqlMap, ValueType};

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Text(Vec<u8>),
    Int(i64),
    Double(f64),
    Blob(Vec<u8>),
    /// SQL NULL in a number column (an `expire_field` without expiry).
    NullInt,
}

/// A UUID as Dovecot 2.4 accepts it (32 hex digits, optionally with the four dashes of
/// the 8-4-4-4-12 form), in the lowercase dashed form.
pub(crate) fn canonical_uuid(s: &[u8]) -> Option<String> {
    let hex: Vec<u8> = match s.len() {
        32 => s.to_vec(),
        36 => {
            if [8, 13, 18, 23].iter().any(|&i| s[i] != b'-') {
                return None;
            }
            s.iter().copied().filter(|&b| b != b'-').collect()
        }
        _ => return None,
    };
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let h = String::from_utf8(hex).ok()?.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// Dovecot's `str_to_int64`: an optional `-`, then one or more digits, within range.
fn parse_i64(s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn parse_hex(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// A dict-side string checked and converted for a column of type `ty`. `field`
/// names the column in the error text (`value` for values, as Dovecot says).
pub(crate) fn typed_param(
    map: &SqlMap,
    ty: ValueType,
    field: &str,
    value: &[u8],
) -> Result<Param, String> {
    let fail = |what: &str| {
        format!(
            "{field} field's value isn't {what}: {} (in pattern: {})",
            String::from_utf8_lossy(value),
            map.normalized_pattern
        )
    };
    match ty {
        ValueType::String => Ok(Param::Text(value.to_vec())),
        ValueType::Int => parse_i64(value)
            .map(Param::Int)
            .ok_or_else(|| fail("64bit signed integer")),
        ValueType::Uint => parse_i64(value)
            .filter(|_| !value.starts_with(b"-"))
            .map(Param::Int)
            .ok_or_else(|| fail("64bit unsigned integer")),
        ValueType::Hexblob => parse_hex(value)
            .map(Param::Blob)
            .ok_or_else(|| fail("hexblob")),
        // Finite only: not every database stores NaN or infinities.
        ValueType::Double => std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|d| d.is_finite())
            .map(Param::Double)
            .ok_or_else(|| fail("a double")),
        ValueType::Uuid => canonical_uuid(value)
            .map(|u| Param::Text(u.into_bytes()))
            .ok_or_else(|| fail("an uuid")),
    }
}

/// Parameters for the key columns of `map` bound to `values` (the first `values.len()`).
pub(crate) fn key_params(map: &SqlMap, values: &[impl AsRef<[u8]>]) -> Result<Vec<Param>, String> {
    map.fields
        .iter()
        .zip(values)
        .map(|(f, v)| typed_param(map, f.value_type, &f.column, v.as_ref()))
        .collect()
}

/// Whether a text value isn't UTF-8 (PostgreSQL text can't hold it).
pub(crate) fn has_non_utf8<'a>(mut params: impl Iterator<Item = &'a Param>) -> bool {
    params.any(|p| matches!(p, Param::Text(t) if std::str::from_utf8(t).is_err()))
}

/// Whether `key` is a `priv/` key (then the username column is part of the row's key).
pub(crate) fn is_private(key: &[u8]) -> bool {
    key.starts_with(crate::PRIV_PREFIX)
}

/// The first map whose pattern matches `key` exactly, with the variable values. Maps
/// without `username_field` never match `priv/` keys: Dovecot would compare a quoted
/// string literal with itself there, so such maps never found a row anyway.
pub(crate) fn find_map<'k>(maps: &[SqlMap], key: &'k [u8]) -> Option<(usize, Vec<&'k [u8]>)> {
    let private = is_private(key);
    maps.iter().enumerate().find_map(|(i, map)| {
        if private && map.username_field.is_none() {
            return None;
        }
        super::pattern::match_key(map.normalized_pattern.as_bytes(), key).map(|values| (i, values))
    })
}
