//! Where a store is: the URL an operator writes, checked and parsed, and
//! shown without its password.

use std::fmt;
use std::path::PathBuf;

use crate::error::Error;

/// A store URL, checked: `memory`, `sqlite://PATH` or
/// `postgres://...` (`postgresql://...` too).
///
/// Its `Display` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// Tasks and sessions live in memory alone: nothing is written.
    Memory,
    /// A SQLite file, relative to the working folder or absolute
    /// (`sqlite:///var/lib/grym/grym.db`).
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by replicas.
    Postgres {
        /// The URL as given, password and all, to connect with.
        url: String,
        /// The URL without its password, to show.
        shown: String,
    },
}

impl StoreUrl {
    /// Checks and parses a store URL.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let url = url.trim();
        if url == "memory" {
            return Ok(Self::Memory);
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            return sqlite(url, path);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return postgres(url);
        }
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        Err(Error::BadUrl {
            url: if scheme.is_empty() {
                url.chars().take(64).collect()
            } else {
                format!("{scheme}://…")
            },
            reason: "expected memory, sqlite://PATH or postgres://...".to_owned(),
        })
    }

    /// Whether this is `memory`: no store at all.
    pub fn is_memory(&self) -> bool {
        matches!(self, Self::Memory)
    }
}

fn sqlite(url: &str, path: &str) -> Result<StoreUrl, Error> {
    let bad = |reason: &str| Error::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if path.is_empty() {
        return Err(bad("names no file: write sqlite://PATH"));
    }
    if path.starts_with(':') {
        return Err(bad(
            "an in-memory SQLite database keeps nothing: use `memory`",
        ));
    }
    if path.ends_with('/') {
        return Err(bad("names a folder, not a file"));
    }
    Ok(StoreUrl::Sqlite(PathBuf::from(path)))
}

fn postgres(url: &str) -> Result<StoreUrl, Error> {
    let scheme = url.split_once("://").map_or("postgres", |(s, _)| s);
    let parsed = ::url::Url::parse(url).map_err(|error| Error::BadUrl {
        // An unparsed URL cannot be shown safely: it may hold a password.
        url: format!("{scheme}://…"),
        reason: error.to_string(),
    })?;
    let mut shown = parsed.clone();
    if shown.password().is_some() {
        // Only a URL that cannot be a base refuses this, and one with a
        // password always can.
        shown.set_password(None).ok();
    }
    let query: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(key, _)| key != "password")
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    if query.is_empty() {
        shown.set_query(None);
    } else {
        shown.query_pairs_mut().clear().extend_pairs(query);
    }
    if parsed.host_str().is_none_or(str::is_empty)
        && !parsed.query_pairs().any(|(key, _)| key == "host")
    {
        return Err(Error::BadUrl {
            url: shown.to_string(),
            reason: "names no host".to_owned(),
        });
    }
    Ok(StoreUrl::Postgres {
        url: url.to_owned(),
        shown: shown.to_string(),
    })
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres { shown, .. } => f.write_str(shown),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_may_be_relative_or_absolute() {
        assert_eq!(
            StoreUrl::parse("sqlite://data/grym.db").unwrap(),
            StoreUrl::Sqlite(PathBuf::from("data/grym.db"))
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/grym/grym.db").unwrap(),
            StoreUrl::Sqlite(PathBuf::from("/var/lib/grym/grym.db"))
        );
    }

    #[test]
    fn memory_and_empty_sqlite_urls_are_told_apart() {
        assert!(StoreUrl::parse("memory").unwrap().is_memory());
        let error = StoreUrl::parse("sqlite://").unwrap_err().to_string();
        assert!(error.contains("names no file"), "{error}");
        let error = StoreUrl::parse("sqlite://:memory:")
            .unwrap_err()
            .to_string();
        assert!(error.contains("use `memory`"), "{error}");
    }

    #[test]
    fn a_postgres_url_is_shown_without_its_password() {
        let url =
            StoreUrl::parse("postgres://grym:s3cret@db.local:5432/grym?sslmode=require").unwrap();
        let shown = url.to_string();
        assert_eq!(shown, "postgres://grym@db.local:5432/grym?sslmode=require");
        assert!(!format!("{url:?}").contains("s3cret"));
        let url = StoreUrl::parse("postgresql://db.local/grym?password=s3cret&user=grym").unwrap();
        assert_eq!(url.to_string(), "postgresql://db.local/grym?user=grym");
    }

    #[test]
    fn unknown_schemes_and_broken_urls_are_refused_without_echoing_secrets() {
        let error = StoreUrl::parse("mysql://root:s3cret@db/grym")
            .unwrap_err()
            .to_string();
        assert!(error.contains("expected memory"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let error = StoreUrl::parse("postgres://grym:s3cret@db:notaport/grym")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }
}
