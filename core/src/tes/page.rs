//! Page tokens and sizes of `GET /tasks`.

use base64::Engine as _;

use super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

const PAGE_TOKEN_PREFIX: &str = "tes1.";

/// The `next_page_token` of a page whose last task has sequence number `seq`.
pub fn page_token(seq: i64) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seq.to_be_bytes());
    format!("{PAGE_TOKEN_PREFIX}{b64}")
}

/// The sequence number a `page_token` names; a token this server did not make is refused.
pub fn parse_page_token(token: &str) -> Result<i64, String> {
    let bad =
        || format!("page_token {token:?} was not made by this server; start from the first page");
    let b64 = token.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| bad())?;
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| bad())?;
    let seq = i64::from_be_bytes(bytes);
    if seq < 1 {
        return Err(bad());
    }
    Ok(seq)
}

/// Checks a `page_size` query value.
pub fn page_size(asked: Option<i64>) -> Result<u64, String> {
    match asked {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if n >= 1 && n as u64 <= MAX_PAGE_SIZE => Ok(n as u64),
        Some(n) => Err(format!("page_size is {n}; ask for 1 to {MAX_PAGE_SIZE}")),
    }
}
