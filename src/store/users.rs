//! Staff users and their web sessions in the store (R-VEH-5). A user is
//! keyed by its lower-case name, so "Ines" and "ines" are one person; a
//! session is keyed by the SHA-256 of its cookie's id, so a copy of the
//! store yields no session that could be replayed. Like API tokens, both
//! are the appliance's own secrets and stay out of the outbox.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{get_record, tables, Record, Result, Store, WriteTx};
use crate::web::auth::Role;

/// Sessions looked at in one pass over the table (expiry, a user's
/// sessions): far more than a workshop's staff ever holds.
pub const MAX_SESSIONS_SCANNED: usize = 100_000;

/// One staff user, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Lower case; the record's key and what staff type to log in.
    pub name: String,
    /// What the pages show, e.g. "Ines Duarte".
    pub display_name: String,
    pub role: Role,
    /// Argon2id in PHC string form (`$argon2id$v=19$m=...`).
    pub password_hash: String,
    /// A disabled user cannot log in and loses every session at once.
    pub disabled: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl Record for UserRecord {
    const VERSION: u8 = 1;
}

/// One logged-in browser, as stored under the hash of its cookie's id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The user's key.
    pub user: String,
    /// The token every state-changing form of this session carries.
    pub csrf: [u8; 32],
    pub created_ms: u64,
    /// Refreshed now and then, not on every request (see `web::session`).
    pub last_seen_ms: u64,
}

impl Record for SessionRecord {
    const VERSION: u8 = 1;
}

/// The key of a user name: names are compared without regard to case.
pub fn user_key(name: &str) -> String {
    name.trim().to_lowercase()
}

impl WriteTx<'_> {
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        get_record(&*self.tx, tables::USERS, user_key(name).as_bytes())
    }

    pub fn put_user(&mut self, user: &UserRecord) -> Result<()> {
        self.tx.put(
            tables::USERS,
            user_key(&user.name).as_bytes(),
            &user.to_bytes(),
        )
    }

    /// Whether any user exists: the first one is made with the setup code.
    pub fn has_users(&self) -> Result<bool> {
        Ok(!self
            .tx
            .scan(
                tables::USERS,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                1,
            )?
            .is_empty())
    }

    /// Every user, in name order.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        self.tx
            .scan(
                tables::USERS,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                usize::MAX,
            )?
            .iter()
            .map(|(_, v)| UserRecord::from_bytes(v))
            .collect()
    }

    pub fn session(&self, key: &[u8; 32]) -> Result<Option<SessionRecord>> {
        get_record(&*self.tx, tables::SESSIONS, key)
    }

    pub fn put_session(&mut self, key: &[u8; 32], session: &SessionRecord) -> Result<()> {
        self.tx.put(tables::SESSIONS, key, &session.to_bytes())
    }

    pub fn delete_session(&mut self, key: &[u8; 32]) -> Result<()> {
        self.tx.delete(tables::SESSIONS, key)?;
        Ok(())
    }

    /// Deletes the sessions for which `doomed(key, session)` is true;
    /// returns how many.
    pub fn delete_sessions_where(
        &mut self,
        mut doomed: impl FnMut(&[u8], &SessionRecord) -> bool,
    ) -> Result<usize> {
        let all = self.tx.scan(
            tables::SESSIONS,
            (Bound::Unbounded, Bound::Unbounded),
            false,
            MAX_SESSIONS_SCANNED,
        )?;
        let mut n = 0;
        for (k, v) in &all {
            if doomed(k, &SessionRecord::from_bytes(v)?) {
                self.tx.delete(tables::SESSIONS, k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Store {
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        get_record(self.engine(), tables::USERS, user_key(name).as_bytes())
    }

    /// Every user, in name order (a workshop has tens, not thousands).
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        self.engine()
            .scan(
                tables::USERS,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                usize::MAX,
            )?
            .iter()
            .map(|(_, v)| UserRecord::from_bytes(v))
            .collect()
    }

    pub fn has_users(&self) -> Result<bool> {
        Ok(!self
            .engine()
            .scan(
                tables::USERS,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                1,
            )?
            .is_empty())
    }

    pub fn session(&self, key: &[u8; 32]) -> Result<Option<SessionRecord>> {
        get_record(self.engine(), tables::SESSIONS, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserRecord {
        UserRecord {
            name: name.into(),
            display_name: name.to_uppercase(),
            role: Role::Advisor,
            password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            disabled: false,
            created_ms: 1,
            updated_ms: 2,
        }
    }

    #[test]
    fn users_are_keyed_without_case_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), super::super::EngineKind::Redb).unwrap();
            assert!(
                !store.has_users().unwrap(),
                "no table before the first user"
            );
            store
                .write(|tx| {
                    tx.put_user(&user("ines"))?;
                    tx.put_user(&user("bruno"))
                })
                .unwrap();
        }
        let store = Store::open(dir.path(), super::super::EngineKind::Redb).unwrap();
        assert!(store.has_users().unwrap());
        assert_eq!(store.user(" INES ").unwrap(), Some(user("ines")));
        assert_eq!(store.user("nobody").unwrap(), None);
        let names: Vec<String> = store.users().unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["bruno", "ines"]);
    }

    #[test]
    fn sessions_are_deleted_by_predicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), super::super::EngineKind::Redb).unwrap();
        let session = |user: &str, seen: u64| SessionRecord {
            user: user.into(),
            csrf: [7; 32],
            created_ms: 0,
            last_seen_ms: seen,
        };
        store
            .write(|tx| {
                tx.put_session(&[1; 32], &session("ines", 10))?;
                tx.put_session(&[2; 32], &session("ines", 20))?;
                tx.put_session(&[3; 32], &session("bruno", 10))
            })
            .unwrap();
        let n = store
            .write(|tx| tx.delete_sessions_where(|_, s| s.user == "ines" && s.last_seen_ms < 15))
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(store.session(&[1; 32]).unwrap(), None);
        assert_eq!(store.session(&[2; 32]).unwrap(), Some(session("ines", 20)));
        assert!(store.session(&[3; 32]).unwrap().is_some());
    }
}
