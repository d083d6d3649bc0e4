//! API tokens in the store: the hash of each token under its selector,
//! with its name, role and creation time. The token itself is never
//! stored (see `web::auth`). Tokens are the appliance's own secrets, so
//! they stay out of the outbox: the importer never sees them.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{get_record, tables, Record, Result, Store, WriteTx};
use crate::web::auth::Role;

/// One API token, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The public part of the token, and the record's key.
    pub selector: [u8; 8],
    /// Who or what uses it; recorded as "by" on the lead actions it makes.
    pub name: String,
    pub role: Role,
    /// SHA-256 of the whole token text.
    pub sha256: [u8; 32],
    pub created_ms: u64,
}

impl Record for TokenRecord {
    const VERSION: u8 = 1;
}

impl WriteTx<'_> {
    pub fn token(&self, selector: &[u8; 8]) -> Result<Option<TokenRecord>> {
        get_record(&*self.tx, tables::TOKENS, selector)
    }

    pub fn put_token(&mut self, token: &TokenRecord) -> Result<()> {
        self.tx
            .put(tables::TOKENS, &token.selector, &token.to_bytes())
    }
}

impl Store {
    pub fn token(&self, selector: &[u8; 8]) -> Result<Option<TokenRecord>> {
        get_record(self.engine(), tables::TOKENS, selector)
    }

    /// Up to `limit` tokens, in selector order.
    pub fn tokens(&self, limit: usize) -> Result<Vec<TokenRecord>> {
        self.engine()
            .scan(
                tables::TOKENS,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                limit,
            )?
            .iter()
            .map(|(_, v)| TokenRecord::from_bytes(v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_survive_reopen_and_list_in_selector_order() {
        let dir = tempfile::tempdir().unwrap();
        let record = |selector: [u8; 8], name: &str| TokenRecord {
            selector,
            name: name.into(),
            role: Role::Technician,
            sha256: [selector[0]; 32],
            created_ms: 5,
        };
        {
            let store = Store::open(dir.path(), super::super::EngineKind::Redb).unwrap();
            assert!(
                store.tokens(10).unwrap().is_empty(),
                "no table before the first token"
            );
            store
                .write(|tx| {
                    tx.put_token(&record([2; 8], "b"))?;
                    tx.put_token(&record([1; 8], "a"))
                })
                .unwrap();
        }
        let store = Store::open(dir.path(), super::super::EngineKind::Redb).unwrap();
        assert_eq!(store.token(&[1; 8]).unwrap(), Some(record([1; 8], "a")));
        assert_eq!(store.token(&[3; 8]).unwrap(), None);
        let names: Vec<String> = store
            .tokens(10)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(store.tokens(1).unwrap().len(), 1);
    }
}
