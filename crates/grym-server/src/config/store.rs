//! The `[store]` table: where accepted work is kept, and how.
//!
//! `url` is grymd's (which store to open); the rest are the core's
//! [`DurabilitySettings`], read into that type with its own defaults and
//! unknown keys refused. With no `url` (and no `GRYM_STORE_URL`), tasks and
//! sessions go to an SQLite file at [`default_url`]'s place.

use std::path::PathBuf;

use grym_core::DurabilitySettings;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// The `[store]` table as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawStore {
    /// `sqlite://PATH`, `postgres://USER@HOST:PORT/DB` or `memory`.
    pub url: Option<String>,
    /// What the core reads.
    pub durability: DurabilitySettings,
}

impl<'de> Deserialize<'de> for RawStore {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = Map::<String, Value>::deserialize(deserializer)?;
        let url = match table.remove("url") {
            None => None,
            Some(Value::String(url)) => Some(url),
            Some(_) => return Err(serde::de::Error::custom("`url` must be a string")),
        };
        let durability = DurabilitySettings::deserialize(Value::Object(table))
            .map_err(serde::de::Error::custom)?;
        Ok(Self { url, durability })
    }
}

/// The validated `[store]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// The store to open.
    pub url: String,
    /// How accepted work is kept.
    pub durability: DurabilitySettings,
}

impl StoreConfig {
    /// The URL with any password replaced, for logs.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }
}

impl RawStore {
    /// Checks the table: a URL that is not empty, the core's ranges.
    pub(super) fn validate(self) -> Result<StoreConfig, crate::Error> {
        let url = match self.url {
            Some(url) if url.trim().is_empty() => {
                return Err(super::invalid(
                    "store.url",
                    "must name a store: sqlite://PATH, postgres://... or memory",
                ));
            }
            Some(url) => url,
            None => default_url(),
        };
        self.durability
            .validate()
            .map_err(super::setting("store"))?;
        Ok(StoreConfig {
            url,
            durability: self.durability,
        })
    }
}

/// Where grymd keeps its data with no configuration:
/// `$XDG_DATA_HOME/grym/grym.db`, else `~/.local/share/grym/grym.db`, else
/// `grym.db` in the working folder.
pub fn default_url() -> String {
    let home = || std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share"));
    let folder = std::env::var_os("XDG_DATA_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(home)
        .map(|data| data.join("grym"))
        .unwrap_or_default();
    format!("sqlite://{}", folder.join("grym.db").display())
}

/// `url` with its password (in the user part or a `password=` parameter)
/// replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => path.to_owned(),
    };
    format!("{scheme}://{authority}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_log() {
        assert_eq!(
            redact("postgres://grym:s3cret@db:5432/grym"),
            "postgres://grym:***@db:5432/grym"
        );
        assert_eq!(
            redact("postgres://grym@db:5432/grym"),
            "postgres://grym@db:5432/grym"
        );
        assert_eq!(
            redact("sqlite:///var/lib/grym.db"),
            "sqlite:///var/lib/grym.db"
        );
        assert_eq!(redact("memory"), "memory");
        assert_eq!(
            redact("postgres://db/grym?user=grym&password=s3cret"),
            "postgres://db/grym?user=grym&password=***"
        );
    }

    #[test]
    fn the_default_store_is_an_sqlite_file() {
        assert!(default_url().starts_with("sqlite://"));
        assert!(default_url().ends_with("grym/grym.db"));
    }
}
