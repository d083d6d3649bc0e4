//! Who may do what: the staff roles of SPEC.md R-VEH-5 as [`Role`] and
//! [`Permission`], and the API tokens that carry a role (`forecourt token
//! create`, `Authorization: Bearer TOKEN`). The role model knows nothing of
//! HTTP, so the web UI's sessions can use it as the API does.
//!
//! A token is `fct_`, a 16-hex-digit selector and a 64-hex-digit secret (8
//! and 32 bytes from the operating system's RNG). The store keeps only the
//! token's SHA-256 under its selector: a stolen store yields no token. The
//! selector finds the record (its timing tells an attacker nothing secret)
//! and the hash is compared in constant time. SHA-256 is right here because
//! the secret has 256 bits of entropy; a slow password hash (argon2) guards
//! low-entropy passwords, which tokens are not.

use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::tokens::TokenRecord;
use crate::store::{Store, StoreError};

/// What every token starts with, so that secret scanners and people can
/// tell a Forecourt token from other strings.
pub const TOKEN_PREFIX: &str = "fct_";
const SELECTOR_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
/// Length of a token's text.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 2 * (SELECTOR_BYTES + SECRET_BYTES);
/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A staff role (R-VEH-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, users and settings included.
    Admin,
    /// Leads, reminders, bookings and conversations.
    Advisor,
    /// Reads everything; closes and annotates leads.
    Technician,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Advisor, Role::Technician];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Advisor => "advisor",
            Role::Technician => "technician",
        }
    }

    /// `admin`, `advisor` or `technician`, in any case.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// R-VEH-5. A technician works on the vehicle, not with the customer:
    /// closing a lead and adding a note are "close/annotate"; assigning
    /// work, reopening (which overrides a close) and messaging the customer
    /// are an advisor's.
    pub fn can(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Advisor => !matches!(p, ManageUsers | ManageSettings),
            Role::Technician => matches!(p, Read | CloseLead | AnnotateLead),
        }
    }
}

/// Something a role may or may not do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Every read: vehicles, leads, the dashboard, bookings.
    Read,
    AssignLead,
    CloseLead,
    ReopenLead,
    /// Add a note to a lead.
    AnnotateLead,
    /// Queue a message to the customer (leads, reminders, conversations).
    MessageCustomer,
    ManageBookings,
    ManageReminders,
    ManageConversations,
    /// Add, edit and disable users; create API tokens.
    ManageUsers,
    /// Workshop settings, catalog, consent.
    ManageSettings,
}

/// Who made a request: a token's name and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn can(&self, p: Permission) -> bool {
        self.role.can(p)
    }
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name: {0}")]
    InvalidName(String),
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a token's name: what staff will read in a lead's history.
pub fn check_name(name: &str) -> Result<&str, TokenError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(TokenError::InvalidName("must not be empty".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(TokenError::InvalidName(format!(
            "at most {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(TokenError::InvalidName(
            "must not hold control characters".into(),
        ));
    }
    Ok(name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Makes a token with `role`, stores its hash, and returns its text: the
/// only time it exists outside the caller's hands.
pub fn create_token(
    store: &Store,
    name: &str,
    role: Role,
    now_ms: u64,
) -> Result<String, TokenError> {
    let name = check_name(name)?.to_owned();
    // A selector that is taken (2^-64 per existing token) is drawn again.
    for _ in 0..4 {
        let mut selector = [0u8; SELECTOR_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng
            .try_fill_bytes(&mut selector)
            .map_err(|e| TokenError::Random(e.to_string()))?;
        rand::rngs::OsRng
            .try_fill_bytes(&mut secret)
            .map_err(|e| TokenError::Random(e.to_string()))?;
        let token = format!("{TOKEN_PREFIX}{}{}", hex(&selector), hex(&secret));
        let record = TokenRecord {
            selector,
            name: name.clone(),
            role,
            sha256: sha256(&token),
            created_ms: now_ms,
        };
        let stored = store.write(|tx| {
            if tx.token(&selector)?.is_some() {
                return Ok(false);
            }
            tx.put_token(&record)?;
            Ok(true)
        })?;
        if stored {
            return Ok(token);
        }
    }
    Err(TokenError::Random(
        "four selectors in a row were taken".into(),
    ))
}

/// The selector of a well-formed token's text.
fn selector_of(token: &str) -> Option<[u8; SELECTOR_BYTES]> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    if token.len() != TOKEN_LEN || !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut selector = [0u8; SELECTOR_BYTES];
    for (i, byte) in selector.iter_mut().enumerate() {
        *byte = u8::from_str_radix(rest.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(selector)
}

/// Equal without an early exit, so the time taken does not tell how many
/// leading bytes matched.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The caller a token stands for, or `None` when it is not a valid token.
pub fn authenticate(store: &Store, token: &str) -> Result<Option<Caller>, StoreError> {
    let Some(selector) = selector_of(token) else {
        return Ok(None);
    };
    let Some(record) = store.token(&selector)? else {
        return Ok(None);
    };
    if !constant_time_eq(&sha256(token), &record.sha256) {
        return Ok(None);
    }
    Ok(Some(Caller {
        name: record.name,
        role: record.role,
    }))
}

/// The token of an `Authorization` header value: `Bearer TOKEN`, the
/// scheme in any case (RFC 6750 section 2.1, RFC 9110 section 11.1).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::EngineKind::Redb).unwrap();
        (dir, store)
    }

    #[test]
    fn r_veh_5_roles() {
        use Permission::*;
        let all = [
            Read,
            AssignLead,
            CloseLead,
            ReopenLead,
            AnnotateLead,
            MessageCustomer,
            ManageBookings,
            ManageReminders,
            ManageConversations,
            ManageUsers,
            ManageSettings,
        ];
        // admin: everything, users and settings included.
        assert!(all.iter().all(|p| Role::Admin.can(*p)));
        // advisor: leads, reminders, bookings, conversations; not users or settings.
        for p in all {
            assert_eq!(
                Role::Advisor.can(p),
                !matches!(p, ManageUsers | ManageSettings),
                "advisor {p:?}"
            );
        }
        // technician: read, and close/annotate leads.
        for p in all {
            assert_eq!(
                Role::Technician.can(p),
                matches!(p, Read | CloseLead | AnnotateLead),
                "technician {p:?}"
            );
        }
    }

    #[test]
    fn roles_parse_in_any_case_and_nothing_else() {
        assert_eq!(Role::parse("Admin"), Some(Role::Admin));
        assert_eq!(Role::parse(" technician "), Some(Role::Technician));
        assert_eq!(Role::parse("advisor"), Some(Role::Advisor));
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::parse(""), None);
    }

    #[test]
    fn a_created_token_authenticates_and_only_its_hash_is_stored() {
        let (_dir, store) = store();
        let token = create_token(&store, " Ines at the desk ", Role::Advisor, 1_000).unwrap();
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token.starts_with(TOKEN_PREFIX));
        let caller = authenticate(&store, &token).unwrap().expect("valid token");
        assert_eq!(
            caller,
            Caller {
                name: "Ines at the desk".into(),
                role: Role::Advisor
            }
        );
        let stored = store.tokens(100).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].created_ms, 1_000);
        // The secret half of the token is nowhere in the record.
        let record = format!("{:?}", stored[0]);
        assert!(!record.contains(&token[TOKEN_PREFIX.len() + 16..]));
        assert_eq!(stored[0].sha256, sha256(&token));
    }

    #[test]
    fn tokens_are_distinct() {
        let (_dir, store) = store();
        let a = create_token(&store, "a", Role::Admin, 0).unwrap();
        let b = create_token(&store, "a", Role::Admin, 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            store.tokens(100).unwrap().len(),
            2,
            "names are labels, not keys"
        );
    }

    #[test]
    fn wrong_or_malformed_tokens_are_refused() {
        let (_dir, store) = store();
        let token = create_token(&store, "t", Role::Technician, 0).unwrap();
        // Right selector, one secret digit changed.
        let mut wrong = token.clone().into_bytes();
        let last = wrong.len() - 1;
        wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
        let wrong = String::from_utf8(wrong).unwrap();
        assert_eq!(authenticate(&store, &wrong).unwrap(), None);
        assert_eq!(authenticate(&store, &token.to_uppercase()).unwrap(), None);
        assert_eq!(authenticate(&store, &token[..TOKEN_LEN - 1]).unwrap(), None);
        assert_eq!(authenticate(&store, &format!("{token}0")).unwrap(), None);
        assert_eq!(authenticate(&store, "").unwrap(), None);
        assert_eq!(
            authenticate(&store, &format!("fct_{}", "0".repeat(80))).unwrap(),
            None
        );
        assert!(authenticate(&store, &token).unwrap().is_some());
    }

    #[test]
    fn names_are_checked() {
        let (_dir, store) = store();
        assert!(matches!(
            create_token(&store, "  ", Role::Admin, 0),
            Err(TokenError::InvalidName(_))
        ));
        assert!(matches!(
            create_token(&store, "a\nb", Role::Admin, 0),
            Err(TokenError::InvalidName(_))
        ));
        assert!(matches!(
            create_token(&store, &"x".repeat(65), Role::Admin, 0),
            Err(TokenError::InvalidName(_))
        ));
        assert!(create_token(&store, &"é".repeat(64), Role::Admin, 0).is_ok());
        assert!(store.tokens(100).unwrap().len() == 1);
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn constant_time_eq_compares_every_byte() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!constant_time_eq(&a, &b));
    }
}
